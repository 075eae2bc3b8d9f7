// Command composecheck validates Compose files offline with compose-go, the library behind
// `docker compose config`: the Compose Specification's JSON schema, then the model's
// consistency (services, networks and volumes that are referenced but not defined, dependency
// cycles, ...). On success it prints the normalised project as JSON, so a test can also read
// what Compose would run.
//
// Usage: composecheck [-project-dir DIR] FILE...
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	projectDir := flag.String("project-dir", "", "directory relative paths resolve against (default: the first file's)")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: composecheck [-project-dir DIR] FILE...")
		os.Exit(2)
	}
	if err := run(*projectDir, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "composecheck:", err)
		os.Exit(1)
	}
}

func run(projectDir string, files []string) error {
	opts := []cli.ProjectOptionsFn{
		// No .env file and no host environment: the result must not depend on the machine.
		cli.WithEnv(nil),
		cli.WithInterpolation(true),
		cli.WithNormalization(true),
		cli.WithConsistency(true),
		cli.WithResolvedPaths(true),
	}
	if projectDir != "" {
		opts = append(opts, cli.WithWorkingDirectory(projectDir))
	}
	options, err := cli.NewProjectOptions(files, opts...)
	if err != nil {
		return err
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		return err
	}
	out, err := project.MarshalJSON()
	if err != nil {
		return err
	}
	_, err = fmt.Println(string(out))
	return err
}
