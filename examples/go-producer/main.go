// Command go-producer is an example sensor/gateway: it reads a 16-bit PCM WAV file and
// produces it to SoundSentry's audio topic directly, as soundsentry.v1.AudioChunk records
// keyed by the sensor id (see README.md and proto/soundsentry/v1/soundsentry.proto).
//
//	go-producer --sensor site-12/mic-3 [--bootstrap host:port] [--topic audio.pcm]
//	            [--chunk-ms 100] [--realtime] recording.wav
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	soundsentryv1 "github.com/soundsentry/soundsentry/examples/go-producer/gen/soundsentry/v1"
)

// What SoundSentry accepts in a chunk (soundsentry.audio.pcm.ChunkLimits); a chunk outside these
// limits is not processed but parked in <topic>.dlq.
const (
	maxSensorIDBytes = 256
	minSampleRateHz  = 8_000
	maxSampleRateHz  = 192_000
	maxChannels      = 8
	maxChunkMS       = 10_000
)

var errBadFlags = errors.New("bad flags")

type options struct {
	bootstrap       string
	topic           string
	sensor          string
	chunkMS         int
	realtime        bool
	deliveryTimeout time.Duration
	path            string
}

func main() { os.Exit(realMain()) }

func realMain() int {
	opts, err := parseFlags(os.Args[1:])
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errBadFlags): // the flag package already explained it
		return 2
	case err != nil:
		fmt.Fprintln(os.Stderr, "go-producer:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, opts); err != nil {
		fmt.Fprintln(os.Stderr, "go-producer:", err)
		return 1
	}
	return 0
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("go-producer", flag.ContinueOnError)
	fs.StringVar(&o.bootstrap, "bootstrap", "127.0.0.1:9092", "Kafka bootstrap servers, comma-separated")
	fs.StringVar(&o.topic, "topic", "audio.pcm", "topic to produce to (<prefix>audio.pcm)")
	fs.StringVar(&o.sensor, "sensor", "", "sensor id, also the record key (required)")
	fs.IntVar(&o.chunkMS, "chunk-ms", 100, "chunk length in milliseconds")
	fs.BoolVar(&o.realtime, "realtime", false, "send chunks at the pace of the audio")
	fs.DurationVar(&o.deliveryTimeout, "delivery-timeout", 30*time.Second,
		"give up on a record not acknowledged within this time")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: go-producer --sensor ID [flags] FILE.wav")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, err
		}
		return o, errBadFlags
	}
	switch {
	case fs.NArg() != 1:
		return o, errors.New("expected exactly one WAV file argument (flags go before it)")
	case o.sensor == "":
		return o, errors.New("--sensor is required")
	case len(o.sensor) > maxSensorIDBytes:
		return o, fmt.Errorf("--sensor is %d bytes, at most %d allowed", len(o.sensor), maxSensorIDBytes)
	case o.chunkMS <= 0 || o.chunkMS > maxChunkMS:
		return o, fmt.Errorf("--chunk-ms must be between 1 and %d", maxChunkMS)
	case o.topic == "":
		return o, errors.New("--topic must not be empty")
	}
	o.path = fs.Arg(0)
	return o, nil
}

func run(ctx context.Context, o options) error {
	f, err := os.Open(o.path)
	if err != nil {
		return err
	}
	defer f.Close()
	wav, err := newWAVReader(f)
	if err != nil {
		return fmt.Errorf("%s: %w", o.path, err)
	}
	if wav.SampleRate < minSampleRateHz || wav.SampleRate > maxSampleRateHz {
		return fmt.Errorf("%s: %d Hz is outside the %d..%d Hz SoundSentry accepts",
			o.path, wav.SampleRate, minSampleRateHz, maxSampleRateHz)
	}
	if wav.Channels > maxChannels {
		return fmt.Errorf("%s: %d channels, SoundSentry accepts at most %d",
			o.path, wav.Channels, maxChannels)
	}

	client, err := kgo.NewClient(
		kgo.SeedBrokers(strings.Split(o.bootstrap, ",")...),
		kgo.DefaultProduceTopic(o.topic),
		// The contract's producer settings. franz-go is idempotent by default (never call
		// kgo.DisableIdempotentWrite); with it, retries neither duplicate nor reorder records.
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordDeliveryTimeout(o.deliveryTimeout),
		kgo.ClientID("soundsentry-go-producer"),
	)
	if err != nil {
		return err
	}
	defer client.Close()

	// Produce is asynchronous: remember the first failure, check it after the flush.
	var (
		mu       sync.Mutex
		firstErr error
	)
	failed := func() error {
		mu.Lock()
		defer mu.Unlock()
		return firstErr
	}

	streamID := newUUID()
	streamStart := time.Now()
	rate := uint64(wav.SampleRate)
	framesPerChunk := max(int(rate*uint64(o.chunkMS)/1000), 1)
	buf := make([]byte, framesPerChunk*int(wav.BlockAlign))
	key := []byte(o.sensor)

	var sequence, startSample uint64
	var stopErr error // why reading stopped early, if it did
	for failed() == nil && ctx.Err() == nil {
		frames, err := wav.ReadFrames(buf, framesPerChunk)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			stopErr = fmt.Errorf("%s: %w", o.path, err)
			break
		}
		if o.realtime {
			// A live sensor has a chunk once its last frame was captured.
			ready := streamStart.Add(framesToDuration(startSample+uint64(frames), rate))
			select {
			case <-time.After(time.Until(ready)):
			case <-ctx.Done():
				continue // the loop condition ends it
			}
		}
		chunk := &soundsentryv1.AudioChunk{
			SensorId:     o.sensor,
			StreamId:     streamID,
			Sequence:     sequence,
			StartSample:  startSample,
			SampleRateHz: wav.SampleRate,
			Channels:     uint32(wav.Channels),
			SampleFormat: soundsentryv1.SampleFormat_SAMPLE_FORMAT_S16LE,
			CapturedAt:   timestamppb.New(streamStart.Add(framesToDuration(startSample, rate))),
			// Copy: buf is reused for the next chunk while this one is in flight.
			Pcm: append([]byte(nil), buf[:frames*int(wav.BlockAlign)]...),
		}
		value, err := proto.Marshal(chunk)
		if err != nil {
			stopErr = err
			break
		}
		seq := sequence
		// Not ctx: after a Ctrl-C, what was already read is still delivered.
		client.Produce(context.Background(), &kgo.Record{Key: key, Value: value},
			func(_ *kgo.Record, err error) {
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("chunk %d not acknowledged: %w", seq, err)
					}
					mu.Unlock()
				}
			})
		sequence++
		startSample += uint64(frames)
	}
	if stopErr == nil && ctx.Err() != nil {
		stopErr = errors.New("interrupted")
	}

	// Wait until every produced record is acknowledged (or has failed).
	if err := client.Flush(context.Background()); err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	if err := failed(); err != nil {
		return err
	}
	if stopErr != nil {
		return fmt.Errorf("stopped after %d chunks (all acknowledged): %w", sequence, stopErr)
	}
	if n := wav.TrailingBytes(); n > 0 {
		fmt.Fprintf(os.Stderr, "go-producer: dropped %d bytes of an incomplete last frame\n", n)
	}
	fmt.Printf("produced %d chunks, %d frames, %.3f s of audio (%d Hz, %d ch) to %s as %q, stream %s\n",
		sequence, startSample, float64(startSample)/float64(rate), wav.SampleRate, wav.Channels,
		o.topic, o.sensor, streamID)
	return nil
}

// framesToDuration is frames / rate seconds, without overflowing for long streams.
func framesToDuration(frames, rate uint64) time.Duration {
	whole := frames / rate
	rest := frames % rate
	return time.Duration(whole)*time.Second + time.Duration(rest*uint64(time.Second)/rate)
}

// newUUID returns a random (version 4) UUID, the stream id of this run.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (it panics on a broken system)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
