"""The ``soundsentry`` command: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from soundsentry import __version__
from soundsentry.exceptions import ConfigurationError, SoundSentryError

if TYPE_CHECKING:
    from soundsentry.dev import simulate
    from soundsentry.features.featurizer import FeatureProfile

# The recording `soundsentry simulate` plays by default (from a checkout or the image's /app).
_EXAMPLE = Path("examples/audio/kitchen_alarms.flac")

logger = logging.getLogger("soundsentry")


def _cmd_topics(args: argparse.Namespace) -> int:
    from soundsentry.runtime.settings import KafkaSettings, TopicSettings  # noqa: PLC0415
    from soundsentry.runtime.topics import TopicLayout, ensure_topics  # noqa: PLC0415

    layout = TopicLayout.from_settings(TopicSettings())
    if args.action == "list":
        for topic in layout.physical_topics():
            print(f"{topic.name}\tpartitions={topic.partitions}\t{topic.config}")
        return 0
    created = asyncio.run(ensure_topics(KafkaSettings(), layout))
    for name in created:
        print(f"created {name}")
    print(
        f"{len(created)} created, {sum(1 for _ in layout.physical_topics()) - len(created)} existed"
    )
    return 0


def _cmd_kafka_local(args: argparse.Namespace) -> int:
    from soundsentry.testing import kafka_broker  # noqa: PLC0415

    return kafka_broker.main([args.action, "--port", str(args.port)])


def _cmd_ingest(args: argparse.Namespace) -> int:
    from soundsentry.services.ingest.server import main as ingest_main  # noqa: PLC0415

    return ingest_main()


def _cmd_featurizer(args: argparse.Namespace) -> int:
    from soundsentry.services.featurizer.app import main as featurizer_main  # noqa: PLC0415

    return featurizer_main(loglevel=args.log_level)


def _cmd_classifier(args: argparse.Namespace) -> int:
    from soundsentry.services.classifier.app import main as classifier_main  # noqa: PLC0415

    return classifier_main(loglevel=args.log_level)


def _cmd_alerter(args: argparse.Namespace) -> int:
    from soundsentry.services.alerter.app import main as alerter_main  # noqa: PLC0415

    return alerter_main(loglevel=args.log_level)


def _cmd_serve(args: argparse.Namespace) -> int:
    from soundsentry.services.serve import main as serve_main  # noqa: PLC0415

    return serve_main()


def _rejected(counts: Mapping[str, int]) -> str:
    """``; rejected: reason=n, ...`` for a summary line, or nothing."""
    if not counts:
        return ""
    return "; rejected: " + ", ".join(f"{reason}={n}" for reason, n in sorted(counts.items()))


def _recorded_start_ns(path: Path) -> int:
    """The capture time of a recording pushed faster than real time: one that happened, so it
    ends now (rather than stamping capture times up to its length into the future)."""
    import soundfile  # noqa: PLC0415

    try:
        seconds = float(soundfile.info(str(path)).duration)
    except (OSError, RuntimeError) as exc:
        raise ConfigurationError(f"cannot read {path}: {exc}") from exc
    return time.time_ns() - round(seconds * 1e9)


def _cmd_push(args: argparse.Namespace) -> int:
    from soundsentry.ingest.client import file_chunks, push  # noqa: PLC0415

    chunks = file_chunks(
        args.file,
        sensor_id=args.sensor,
        stream_id=args.stream_id,
        chunk_ms=args.chunk_ms,
        start_time_ns=None if args.realtime else _recorded_start_ns(args.file),
    )
    result = asyncio.run(
        push(args.target, chunks, token=args.token, realtime=args.realtime, tls_ca=args.tls_ca)
    )
    for line in result.messages[:20]:
        print(f"rejected {line}", file=sys.stderr)
    print(
        f"{args.file}: stream {result.stream_id}: {result.published}/{result.sent} chunks "
        f"published in {result.seconds:.2f} s"
        + _rejected(result.rejected)
        + (f"; reconnected {result.reconnects} times" if result.reconnects else "")
    )
    return 0 if result.ok else 1


def _cmd_simulate(args: argparse.Namespace) -> int:
    from soundsentry.dev import simulate  # noqa: PLC0415

    recordings = [simulate.load_recording(path) for path in args.files or [_EXAMPLE]]
    plans = simulate.plan_sensors(args.sensors, recordings, prefix=args.prefix, seed=args.seed)
    if args.truth:
        expected = simulate.expected_events(plans, duration_s=args.duration)
        with args.truth.open("w") as out:
            for item in expected:
                e = item.event
                out.write(f"{e.file_id}\t{e.onset_s:.3f}\t{e.offset_s:.3f}\t{e.label}\n")
    mode = "a sensor gateway producing to Kafka" if args.kafka else f"gRPC to {args.target}"
    print(
        f"{args.sensors} sensors x {args.duration:g} s of {', '.join(r.name for r in recordings)}"
        f" in {args.chunk_ms} ms chunks, {mode}",
        file=sys.stderr,
    )
    if args.kafka:
        report = asyncio.run(_simulate_kafka(plans, args.duration, args.chunk_ms))
    else:
        report = asyncio.run(
            simulate.run_grpc(
                args.target,
                plans,
                duration_s=args.duration,
                chunk_ms=args.chunk_ms,
                token=args.token,
                tls_ca=args.tls_ca,
            )
        )
    for failure in report.failed_sensors[:20]:
        print(f"failed {failure}", file=sys.stderr)
    print(
        f"{report.published}/{report.sent} chunks published from {report.sensors} sensors in "
        f"{report.seconds:.1f} s ({report.sent / max(report.seconds, 1e-9):.0f} chunks/s); "
        f"slowest send {report.max_slip_s:.2f} s behind schedule"
        + _rejected(report.rejected)
        + (f"; {len(report.failed_sensors)} sensors failed" if report.failed_sensors else "")
    )
    return 0 if report.published == report.sent and not report.failed_sensors else 1


async def _simulate_kafka(
    plans: Sequence[simulate.SensorPlan], duration_s: float, chunk_ms: int
) -> simulate.SimulationReport:
    from aiokafka import AIOKafkaProducer  # noqa: PLC0415

    from soundsentry.dev.simulate import run_kafka  # noqa: PLC0415
    from soundsentry.runtime.settings import KafkaSettings, TopicSettings  # noqa: PLC0415
    from soundsentry.runtime.topics import AUDIO, TopicLayout  # noqa: PLC0415

    # As the ingest service publishes: idempotent, acknowledged by every in-sync replica.
    producer = AIOKafkaProducer(**KafkaSettings().producer_kwargs())
    await producer.start()
    try:
        topic = TopicLayout.from_settings(TopicSettings()).name(AUDIO)
        return await run_kafka(producer, topic, plans, duration_s=duration_s, chunk_ms=chunk_ms)
    finally:
        await producer.stop()


def _cmd_stack(args: argparse.Namespace) -> int:
    import tempfile  # noqa: PLC0415

    from soundsentry.dev.stack import SERVICES, LocalStack, StackPorts, run_stack  # noqa: PLC0415
    from soundsentry.testing.kafka_broker import free_port  # noqa: PLC0415

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="soundsentry-stack-"))
    ports = StackPorts.free(
        ingest=args.ingest_port,
        metrics=dict(zip(SERVICES, args.metrics_ports, strict=True)),
        prometheus=args.prometheus_port,
    )
    return asyncio.run(
        run_stack(
            LocalStack(workdir, model_dir=args.model, ports=ports),
            sensors=args.sensors,
            duration_s=args.duration,
            prometheus=not args.no_prometheus,
            kafka_port=args.kafka_port or free_port(),
            # Kafka's data would pile up in /tmp run after run; a --workdir is the user's.
            remove_workdir=args.workdir is None,
        )
    )


def _cmd_detect(args: argparse.Namespace) -> int:
    import csv  # noqa: PLC0415

    from soundsentry.models.model_set import ModelSet  # noqa: PLC0415
    from soundsentry.pipeline.detect import WindowTrace, detect_file, plot_detections  # noqa: PLC0415

    models = ModelSet.from_dir(args.model)
    if args.plot and len(args.paths) != 1:
        raise ConfigurationError("--plot draws one file: give exactly one PATH")
    rows = []
    for path in args.paths:
        traces: list[WindowTrace] = []

        def progress(done: float, name: str = str(path)) -> None:
            if sys.stderr.isatty():
                print(f"\r{name}: {done:4.0%}", end="", file=sys.stderr, flush=True)

        events = detect_file(path, models, progress=progress, traces=traces)
        if sys.stderr.isatty():
            print(file=sys.stderr)
        rows.extend(events)
        if args.plot:
            plot_detections(path, models=models, traces=traces, events=events, out=args.plot)
    if args.format == "json":
        print(json.dumps([dataclasses.asdict(e) for e in rows], indent=2))
    elif args.format == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(["file", "label", "onset_s", "offset_s", "peak_score", "model"])
        for e in rows:
            writer.writerow(
                [
                    e.file,
                    e.label,
                    f"{e.onset_s:.3f}",
                    f"{e.offset_s:.3f}",
                    f"{e.peak_score:.3f}",
                    e.model,
                ]
            )
    else:
        # As wide as the longest file name, so long names do not push the columns apart.
        width = max([32, *(len(Path(e.file).name) for e in rows)])
        print(f"{'file':<{width}} {'label':<16} {'onset_s':>8} {'offset_s':>8} {'peak':>5}")
        for e in rows:
            print(
                f"{Path(e.file).name:<{width}} {e.label:<16} {e.onset_s:>8.2f} "
                f"{e.offset_s:>8.2f} {e.peak_score:>5.2f}"
            )
        if not rows:
            print("(no events)")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from soundsentry.evaluation import sed_metrics as ev  # noqa: PLC0415

    if (args.system is None) == (not args.audio):
        raise ConfigurationError(
            "give either a file of detected events or --audio FILE... (to detect and sweep)"
        )
    reference = ev.read_event_list(args.reference)
    if args.audio:
        reference, _ = ev.match_files(reference, [], by="name")
        system = _sweep_operating_points(args, reference)
    else:
        reference, system = ev.match_files(
            reference, ev.read_event_list(args.system), by=args.match
        )
    event_based = ev.event_based_metrics(
        reference=reference,
        system=system,
        t_collar_s=args.collar_s,
        percentage_of_length=args.offset_percentage,
    )
    segment_based = ev.segment_based_metrics(
        reference=reference, system=system, segment_length_s=args.segment_s
    )
    if args.format == "json":
        print(
            json.dumps(
                {
                    "event_based": ev.metrics_as_dict(event_based),
                    "segment_based": ev.metrics_as_dict(segment_based),
                },
                indent=2,
                default=str,
            )
        )
        return 0
    print(
        ev.metrics_table(
            event_based,
            title=f"event-based (onset collar {args.collar_s:g} s, offset collar "
            f"max({args.collar_s:g} s, {args.offset_percentage:.0%} of length))",
        )
    )
    print()
    print(ev.metrics_table(segment_based, title=f"segment-based ({args.segment_s:g} s segments)"))
    return 0


def _sweep_operating_points(args: argparse.Namespace, reference: list[Any]) -> list[Any]:
    """Detect over ``args.audio``, print (and plot) each label's operating points; returns the
    events detected with the cards' own rules. Files are matched to the reference by name."""
    import soundfile  # noqa: PLC0415

    from soundsentry.evaluation.operating import (  # noqa: PLC0415
        DEFAULT_THRESHOLDS,
        operating_points,
        plot_operating_points,
    )
    from soundsentry.evaluation.sed_metrics import EvalEvent  # noqa: PLC0415
    from soundsentry.models.model_set import ModelSet  # noqa: PLC0415
    from soundsentry.pipeline.detect import WindowTrace, detect_file, score_tracks  # noqa: PLC0415

    models = ModelSet.from_dir(args.model)
    names = [Path(path).name for path in args.audio]
    unknown = sorted({e.file_id for e in reference} - set(names))
    if unknown:
        raise ConfigurationError(
            f"the reference names files not among --audio: {', '.join(unknown[:5])}"
        )
    system, tracks, seconds = [], [], 0.0
    for path, name in zip(args.audio, names, strict=True):
        traces: list[WindowTrace] = []
        found = detect_file(path, models, traces=traces)
        system += [EvalEvent(name, e.label, e.onset_s, e.offset_s) for e in found]
        tracks += score_tracks(name, traces, models)
        seconds += soundfile.info(str(path)).duration
    in_use = {t.label: t.rule.on_threshold for t in tracks}
    curves = operating_points(
        tracks,
        reference,
        hours=seconds / 3600.0,
        thresholds=sorted({*(args.thresholds or DEFAULT_THRESHOLDS), *in_use.values()}),
    )
    print(f"operating points over {seconds / 3600.0:.2f} h (onset collar 0.5 s; * in use)")
    print(f"{'label':<16} {'on':>5} {'recall':>7} {'precision':>9} {'false alarms/h':>15}")
    for label, points in curves.items():
        for p in points:
            mark = "*" if abs(p.on_threshold - in_use.get(label, -1.0)) < 1e-9 else " "
            print(
                f"{label:<16} {p.on_threshold:>5.2f} {p.recall:>7.3f} {p.precision:>9.3f} "
                f"{p.false_alarms_per_hour:>15.2f} {mark}"
            )
    print()
    if args.plot is not None:
        plot_operating_points(curves, args.plot, chosen=in_use)
        print(f"wrote {args.plot}")
    return system


def add_synth_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``soundsentry dataset synth``."""
    from soundsentry.training.dataset import MixSpec  # noqa: PLC0415

    parser.add_argument(
        "--data-dir",
        type=Path,
        default=os.environ.get("SOUNDSENTRY_DATA_DIR"),
        help="the development data (folders with manifest.csv); default $SOUNDSENTRY_DATA_DIR",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (new or empty)")
    parser.add_argument("--train", type=int, default=1000, help="training examples")
    parser.add_argument("--validate", type=int, default=200, help="validation examples")
    parser.add_argument("--test", type=int, default=200, help="test examples")
    parser.add_argument("--seed", type=int, default=0, help="seed: same seed, same data set")
    parser.add_argument("--duration-s", type=float, default=4.0, help="example length (s)")
    parser.add_argument(
        "--target-probability",
        type=float,
        default=MixSpec().target_probability,
        help="share of examples that hold a target sound",
    )
    parser.add_argument(
        "--burst-share",
        type=float,
        default=MixSpec().burst_share,
        help="share of real targets cut to a run of their bursts (one bark of a clip of barks) "
        "or to part of one (a honk of a held horn); default 0: whole clips",
    )
    parser.add_argument(
        "--speed-range",
        type=float,
        default=MixSpec().speed_range,
        help="training split: play real targets and background events at a random speed "
        "within 1/(1+R)..1+R (pitch and length together); default 0: as recorded",
    )
    parser.add_argument(
        "--reverb-share",
        type=float,
        default=MixSpec().reverb_share,
        help="training split: share of real targets and background events heard through a "
        "synthetic room (RT60 0.1-0.8 s); default 0",
    )
    parser.add_argument(
        "--rekognition",
        action="store_true",
        help="also write spectrogram PNGs in the Rekognition Custom Labels layout",
    )


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``soundsentry train``."""
    from soundsentry.training.train import TrainConfig  # noqa: PLC0415 - training only

    defaults = TrainConfig()
    parser.add_argument("dataset_dir", type=Path, help="a folder from 'soundsentry dataset synth'")
    parser.add_argument("--out", type=Path, required=True, help="model folder (card + ONNX)")
    parser.add_argument("--name", default="default", help="model name (file names, card)")
    parser.add_argument(
        "--model-version", dest="model_version", default="1.0.0", help="model version"
    )
    parser.add_argument("--labels", nargs="+", default=None, help="labels (default: all)")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="FILE",
        help="a JSON feature profile, as in a profiles file (default: the built-in full-16k); "
        "a band of full-16k's mel spec is served from full-16k's windows",
    )
    parser.add_argument(
        "--takes-over",
        dest="takes_over",
        nargs="+",
        default=[],
        metavar="LABEL",
        help="labels this model reports instead of the other models of its directory",
    )
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help="most epochs")
    parser.add_argument("--patience", type=int, default=defaults.patience, help="early stopping")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--seed", type=int, default=defaults.seed, help="same seed, same model")
    parser.add_argument(
        "--channels",
        type=int,
        nargs="+",
        default=list(defaults.channels),
        metavar="N",
        help="output channels of each convolution block (network width and depth; default "
        f"{' '.join(str(c) for c in defaults.channels)})",
    )
    parser.add_argument(
        "--false-alarms-per-hour",
        dest="false_alarms_per_hour",
        type=float,
        default=defaults.false_alarms_per_hour,
        metavar="N",
        help="each label's event rule is tuned for event F1 within this many false alarms per "
        "hour of the validation background (default %(default)s; 0 allows none there)",
    )
    parser.add_argument(
        "--false-alarm-margin",
        dest="false_alarm_margin",
        type=float,
        default=defaults.false_alarm_margin,
        metavar="D",
        help="each label's rule must also keep the false-alarm budget with its thresholds D "
        "lower in log-odds (default %(default)s: no margin)",
    )
    parser.add_argument(
        "--filter-augment-db",
        dest="filter_augment_db",
        type=float,
        default=defaults.filter_augment_db,
        metavar="DB",
        help="give each training window a random piecewise-linear filter of up to +-DB over "
        "its bands, as another microphone or room would (default %(default)s: none)",
    )
    parser.add_argument(
        "--average-frequency",
        dest="keep_frequency",
        action="store_false",
        help="average the feature map over frequency instead of giving the heads its bands "
        "(the network before 1.1)",
    )


def run_train(args: argparse.Namespace) -> int:
    """Body of ``soundsentry train`` for parsed ``args`` (see :func:`add_train_arguments`)."""
    from soundsentry.training.examples import DEFAULT_PROFILE  # noqa: PLC0415
    from soundsentry.training.train import TrainConfig, train  # noqa: PLC0415

    profile = DEFAULT_PROFILE if args.profile is None else _read_profile(args.profile)
    config = TrainConfig(
        profile=profile,
        labels=None if args.labels is None else tuple(args.labels),
        epochs=args.epochs,
        patience=args.patience,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
        channels=tuple(args.channels),
        keep_frequency=args.keep_frequency,
        false_alarms_per_hour=args.false_alarms_per_hour,
        false_alarm_margin=args.false_alarm_margin,
        filter_augment_db=args.filter_augment_db,
    )
    card = train(
        args.dataset_dir,
        args.out,
        config,
        name=args.name,
        version=args.model_version,
        progress=sys.stderr if sys.stderr.isatty() else None,
        takes_over=args.takes_over,
    )
    document = json.loads(card.read_text(encoding="utf-8"))
    print(f"wrote {card} and {card.parent / document['onnx']}")
    for label, values in document["metrics"]["window"]["labels"].items():
        print(f"  {label:<16} threshold {values['threshold']:.2f}  window F1 {_fmt(values['f1'])}")
    print(f"licence: {document['licence']}")
    return 0


def _read_profile(path: Path) -> FeatureProfile:
    from soundsentry.features.featurizer import parse_profile  # noqa: PLC0415

    try:
        item = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigurationError(f"{path}: cannot read the feature profile: {exc}") from exc
    return parse_profile(item, where=str(path))


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _print_tuned(tuned: Mapping[str, Any]) -> None:
    """Each label's tuned event rule (calibration.TunedRule) with its validation figures."""
    from soundsentry.training.calibration import rule_document  # noqa: PLC0415

    for label, result in tuned.items():
        # As evaluate prints it: a label without reference events has no F1 (nan), not 0.
        f1 = f"{result.f1:.3f}" if result.events else "  nan"
        print(
            f"  {label:<16} event F1 {f1}  ER {result.error_rate:.3f}  {rule_document(result.rule)}"
        )


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from soundsentry.training.calibration import calibrate_card  # noqa: PLC0415

    tuned = calibrate_card(
        args.card,
        args.dataset_dir,
        false_alarms_per_hour=args.false_alarms_per_hour,
        false_alarm_margin=args.false_alarm_margin,
    )
    print(f"wrote the event rules into {args.card}")
    _print_tuned(tuned)
    return 0


def _cmd_quantize(args: argparse.Namespace) -> int:
    from soundsentry.training.quantize import quantize_card  # noqa: PLC0415

    report = quantize_card(
        args.card,
        args.dataset_dir,
        calibration_windows=args.calibration_windows,
        version=args.model_version,
    )
    print(
        f"wrote {report.onnx} ({report.onnx.stat().st_size} bytes; float: "
        f"{report.source_onnx.name}, {report.source_onnx.stat().st_size} bytes) and {report.card}"
    )
    differences = ", ".join(f"{k} {v:.5f}" for k, v in report.differences.items())
    print(f"int8 against float on the validation windows, |difference|: {differences}")
    _print_tuned(report.tuned)
    return 0


def _cmd_compose(args: argparse.Namespace) -> int:
    from soundsentry.training.compose import compose_cards  # noqa: PLC0415

    report = compose_cards(
        args.base, args.specialists, args.dataset, args.out, version=args.model_version
    )
    print(f"wrote {report.onnx} ({report.onnx.stat().st_size} bytes) and {report.card}")
    for label, model in report.sources.items():
        print(f"  {label:<16} from {model}")
    print(f"largest difference to the parts' scores: {report.largest_difference:.1e}")
    _print_tuned(report.tuned)
    return 0


def run_synth(args: argparse.Namespace) -> int:
    """Body of ``soundsentry dataset synth`` for parsed ``args`` (see :func:`add_synth_arguments`).

    The manifests' creation date is ``$SOURCE_DATE_EPOCH`` when set (reproducible output),
    otherwise now.
    """
    from soundsentry.training.dataset import MixSpec, synthesize  # noqa: PLC0415

    if args.data_dir is None:
        raise ConfigurationError("--data-dir is required (or set SOUNDSENTRY_DATA_DIR)")
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    try:
        created = datetime.fromtimestamp(int(epoch), UTC) if epoch else None
    except ValueError as exc:
        raise ConfigurationError(f"SOURCE_DATE_EPOCH={epoch!r} is not an integer") from exc
    manifest = synthesize(
        data_dir=Path(args.data_dir),
        out_dir=Path(args.out),
        examples_per_split={"train": args.train, "validate": args.validate, "test": args.test},
        spec=MixSpec(
            duration_s=args.duration_s,
            target_probability=args.target_probability,
            burst_share=args.burst_share,
            speed_range=args.speed_range,
            reverb_share=args.reverb_share,
        ),
        seed=args.seed,
        rekognition=args.rekognition,
        created_utc=created,
    )
    print(f"wrote {args.train + args.validate + args.test} examples; manifest: {manifest}")
    print(f"licences of the sources: {manifest.parent / 'LICENCES.txt'}")
    return 0


def _cmd_dataset_mine(args: argparse.Namespace) -> int:
    from collections import Counter  # noqa: PLC0415

    from soundsentry.training.mining import add_to_dataset, mine_hard_negatives  # noqa: PLC0415

    if args.data_dir is None:
        raise ConfigurationError("--data-dir is required (or set SOUNDSENTRY_DATA_DIR)")
    mined = mine_hard_negatives(
        model_dir=args.model,
        data_dir=args.data_dir,
        hours=args.hours,
        seed=args.seed,
        split_seed=args.split_seed,
        min_score=args.min_score,
    )
    added = add_to_dataset(args.dataset_dir, mined)
    counts = Counter(negative.label for negative in mined)
    print(f"added {added} hard negatives to {args.dataset_dir} (train split)")
    for label, count in sorted(counts.items()):
        print(f"  {label:<16} {count} ({count / args.hours:.1f} per hour of background)")
    return 0


def _cmd_dataset_background(args: argparse.Namespace) -> int:
    from soundsentry.training.mining import add_background  # noqa: PLC0415

    if args.data_dir is None:
        raise ConfigurationError("--data-dir is required (or set SOUNDSENTRY_DATA_DIR)")
    added = add_background(
        args.dataset_dir,
        data_dir=args.data_dir,
        split=args.split,
        split_seed=args.split_seed,
        hours=args.hours,
        seed=args.seed,
    )
    print(f"added {added} background mixtures of 30 s to {args.dataset_dir} ({args.split} split)")
    return 0


def _add_card_and_dataset(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("card", type=Path, help="the model card (<name>.json)")
    parser.add_argument("dataset_dir", type=Path, help="a folder from 'soundsentry dataset synth'")


def _add_model_commands(sub: Any) -> None:
    """``train``, ``calibrate``, ``quantize`` and ``compose``."""
    train = sub.add_parser(
        "train",
        help="train a small CNN on a synthesised dataset and export ONNX + model card "
        "(needs: pip install 'soundsentry[train]')",
    )
    add_train_arguments(train)
    train.set_defaults(func=run_train)

    calibrate = sub.add_parser(
        "calibrate",
        help="tune a model's per-label event rules for event F1 (onsets within 0.5 s, as DCASE "
        "2017 task 2) on a data set's validation split and write them into its card",
    )
    _add_card_and_dataset(calibrate)
    calibrate.add_argument(
        "--false-alarms-per-hour",
        type=float,
        default=None,
        metavar="N",
        help="each label's rule keeps at most this many false alarms per hour of the validation "
        "background, written into the card (default: the card's false_alarm_budget_per_hour)",
    )
    calibrate.add_argument(
        "--false-alarm-margin",
        type=float,
        default=None,
        metavar="D",
        help="a rule must keep the budget with its thresholds D lower in log-odds too, so "
        "that none sits just above the validation background's scores (default: the card's, "
        "else 0, no margin)",
    )
    calibrate.set_defaults(func=_cmd_calibrate)

    quantize = sub.add_parser(
        "quantize",
        help="make a model int8 (faster on CPUs), checked against the float model and re-tuned "
        "on a data set's validation split; rewrites its card (needs: pip install "
        "'soundsentry[quantize]')",
    )
    _add_card_and_dataset(quantize)
    quantize.add_argument(
        "--calibration-windows",
        type=int,
        default=512,
        help="validation windows that set the activation ranges (default 512)",
    )
    quantize.add_argument(
        "--model-version", dest="model_version", default=None, help="default: <version>+int8"
    )
    quantize.set_defaults(func=_cmd_quantize)

    compose = sub.add_parser(
        "compose",
        help="put a general model and specialists (cards with takes_over) into one ONNX graph "
        "served as one model, checked and tuned on a data set's validation split (needs: pip "
        "install 'soundsentry[quantize]')",
    )
    compose.add_argument("base", type=Path, help="the general model's card")
    compose.add_argument("specialists", type=Path, nargs="+", help="specialists' cards")
    compose.add_argument(
        "--dataset", type=Path, required=True, help="a folder from 'soundsentry dataset synth'"
    )
    compose.add_argument(
        "--out", type=Path, required=True, help="the composite's card; its ONNX file beside it"
    )
    compose.add_argument("--model-version", dest="model_version", required=True)
    compose.set_defaults(func=_cmd_compose)


def _add_simulate_command(sub: Any) -> None:
    """``simulate`` and ``stack``: load and a whole local system to put it on."""
    sim = sub.add_parser(
        "simulate",
        help="load generator: N sensors streaming recordings with known events in real time",
    )
    sim.add_argument("--sensors", type=int, required=True, help="number of simulated sensors")
    sim.add_argument("--duration", type=float, required=True, help="seconds of audio each sends")
    sim.add_argument(
        "--file",
        dest="files",
        type=Path,
        action="append",
        help=f"recording to play, repeatable; its truth is <stem>.events.tsv (default: {_EXAMPLE})",
    )
    sim.add_argument("--target", default="127.0.0.1:50051", help="ingest host:port")
    sim.add_argument(
        "--kafka",
        action="store_true",
        help="produce to the audio topic directly, as a sensor gateway (SOUNDSENTRY_KAFKA_*)",
    )
    sim.add_argument("--chunk-ms", type=int, default=100, help="chunk length in milliseconds")
    sim.add_argument("--prefix", default="sim-", help="sensor ids are <prefix><number>")
    sim.add_argument("--seed", type=int, default=0, help="seed of the sensors' start positions")
    sim.add_argument(
        "--token",
        default=os.environ.get("SOUNDSENTRY_PUSH_TOKEN"),
        help="bearer token (default: $SOUNDSENTRY_PUSH_TOKEN)",
    )
    sim.add_argument("--tls-ca", type=Path, default=None, help="CA bundle: connect with TLS")
    sim.add_argument(
        "--truth",
        type=Path,
        default=None,
        help="write the events the streams contain (sensor, onset_s, offset_s, label; TSV)",
    )
    sim.set_defaults(func=_cmd_simulate)

    stack = sub.add_parser(
        "stack",
        help="run Kafka (from its jars), the four services, Prometheus and simulated sensors "
        "on loopback, no Docker; Ctrl-C stops it",
    )
    stack.add_argument("--sensors", type=int, default=20, help="simulated sensors (0: none)")
    stack.add_argument("--duration", type=float, default=3600.0, help="seconds they stream")
    stack.add_argument("--model", type=Path, default=Path("models"), help="model directory")
    # Every port defaults to a free one (0), so the stack starts beside anything else; the
    # ports are printed once it is up.
    stack.add_argument(
        "--kafka-port", type=int, default=0, help="broker port on 127.0.0.1 (0: a free one)"
    )
    stack.add_argument(
        "--ingest-port", type=int, default=0, help="ingest gRPC port (0: a free one)"
    )
    stack.add_argument(
        "--metrics-ports",
        type=int,
        nargs=4,
        default=[0, 0, 0, 0],
        metavar=("INGEST", "FEATURIZER", "CLASSIFIER", "ALERTER"),
        help="the services' /metrics ports (0: free ones)",
    )
    stack.add_argument(
        "--prometheus-port", type=int, default=0, help="Prometheus port (0: a free one)"
    )
    stack.add_argument("--no-prometheus", action="store_true", help="do not start Prometheus")
    stack.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="logs and data, kept (default: a temporary folder, removed unless something failed)",
    )
    stack.set_defaults(func=_cmd_stack)


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=os.environ.get("SOUNDSENTRY_DATA_DIR"),
        help="the development data; default $SOUNDSENTRY_DATA_DIR",
    )


def _add_dataset_commands(sub: Any) -> None:
    dataset = sub.add_parser("dataset", help="training data")
    dataset_sub = dataset.add_subparsers(dest="dataset_command", required=True, metavar="ACTION")
    synth = dataset_sub.add_parser(
        "synth",
        help="mix target sounds over real backgrounds into labelled training examples",
    )
    add_synth_arguments(synth)
    synth.set_defaults(func=run_synth)
    mine = dataset_sub.add_parser(
        "mine",
        help="add hard negatives to a data set: training-split background a model takes for a "
        "target sound",
        description="Mix background-only audio from the training split (no target), run the "
        "model over it and add every stretch where a label scores at least --min-score to the "
        "data set's train split as a target-free example. Train again on the data set after.",
    )
    mine.add_argument("dataset_dir", type=Path, help="a folder from 'soundsentry dataset synth'")
    mine.add_argument("--model", type=Path, required=True, help="model directory to mine with")
    _add_data_dir(mine)
    mine.add_argument("--hours", type=float, default=2.0, help="background to mine (h)")
    mine.add_argument("--min-score", type=float, default=0.3, help="score that makes a negative")
    mine.add_argument(
        "--split-seed", type=int, required=True, help="the seed the data set was mixed with"
    )
    mine.add_argument("--seed", type=int, default=0, help="seed of the background mixtures")
    mine.set_defaults(func=_cmd_dataset_mine)
    background = dataset_sub.add_parser(
        "background",
        help="add hours of background-only mixtures to a data set's validation split, so "
        "calibration counts false alarms on long recordings",
        description="Mix 30 s background-only recordings (no target) from a split's own "
        "material, as 'dataset mine' does for training, and add them to that split. On the "
        "validation split, calibration ('train', 'calibrate') then holds each label to its "
        "false-alarm budget over these hours too.",
    )
    background.add_argument("dataset_dir", type=Path, help="a folder from 'dataset synth'")
    _add_data_dir(background)
    background.add_argument("--split", default="validate", choices=["validate", "train"])
    background.add_argument("--hours", type=float, default=3.0, help="background to add (h)")
    background.add_argument(
        "--split-seed", type=int, required=True, help="the seed the data set was mixed with"
    )
    background.add_argument("--seed", type=int, default=0, help="seed of the mixtures")
    background.set_defaults(func=_cmd_dataset_background)


class _SettingsHelp(argparse.HelpFormatter):
    """Help that ends with the settings a service reads, with their defaults (the settings
    classes are imported only when help is shown)."""

    def __init__(self, prog: str, *, prefixes: tuple[str, ...]) -> None:
        super().__init__(prog)
        self._prefixes = prefixes

    def format_help(self) -> str:
        from soundsentry.services.catalog import settings_help  # noqa: PLC0415

        return (
            f"{super().format_help()}\nsettings (environment variables, with their defaults):\n"
            f"{settings_help(self._prefixes)}\n"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="soundsentry",
        description="Detect sounds that matter in audio from many microphones.",
    )
    parser.add_argument("--version", action="version", version=f"soundsentry {__version__}")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of any failure")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    topics = sub.add_parser(
        "topics",
        help="list or create the Kafka topics (SOUNDSENTRY_KAFKA_*, SOUNDSENTRY_TOPICS_*)",
    )
    topics.add_argument("action", choices=["list", "create"])
    topics.set_defaults(func=_cmd_topics)

    services = (
        ("ingest", "run the gRPC ingest service (SOUNDSENTRY_INGEST_*)", _cmd_ingest),
        (
            "featurizer",
            "run the featurizer stream service (SOUNDSENTRY_FEATURIZER_*)",
            _cmd_featurizer,
        ),
        (
            "classifier",
            "run the classifier stream service (SOUNDSENTRY_CLASSIFIER_*)",
            _cmd_classifier,
        ),
        ("alerter", "run the alerter stream service (SOUNDSENTRY_ALERTER_*)", _cmd_alerter),
        (
            "serve",
            "run every stage in one process without Kafka: gRPC ingest, featurizer, "
            "classifier, alerter, notifications (events also printed as JSON lines)",
            _cmd_serve,
        ),
    )
    common = ("SOUNDSENTRY_KAFKA_", "SOUNDSENTRY_TOPICS_")
    settings = {
        "ingest": ("SOUNDSENTRY_INGEST_", *common),
        "featurizer": ("SOUNDSENTRY_FEATURIZER_", *common),
        "classifier": ("SOUNDSENTRY_CLASSIFIER_", "SOUNDSENTRY_ESCALATION_", *common),
        "alerter": ("SOUNDSENTRY_ALERTER_", "SOUNDSENTRY_NOTIFY_", *common),
        "serve": (
            "SOUNDSENTRY_INGEST_",
            "SOUNDSENTRY_CLASSIFIER_",
            "SOUNDSENTRY_ALERTER_",
            "SOUNDSENTRY_NOTIFY_",
        ),
    }
    for name, text, func in services:
        sub.add_parser(
            name,
            help=text,
            description=f"{text[0].upper()}{text[1:]}, until SIGTERM or Ctrl-C. It takes no "
            "options: it is configured by the environment variables below (unknown ones under "
            "these prefixes are refused).",
            formatter_class=functools.partial(_SettingsHelp, prefixes=settings[name]),
        ).set_defaults(func=func)

    push = sub.add_parser("push", help="stream an audio file to the ingest service over gRPC")
    push.add_argument("file", type=Path, help="WAV, FLAC, OGG or MP3 file")
    push.add_argument("--sensor", required=True, help="sensor id, e.g. site-12/mic-3")
    push.add_argument("--target", default="127.0.0.1:50051", help="ingest host:port")
    push.add_argument(
        "--token",
        default=os.environ.get("SOUNDSENTRY_PUSH_TOKEN"),
        help="bearer token (default: $SOUNDSENTRY_PUSH_TOKEN)",
    )
    push.add_argument("--chunk-ms", type=int, default=100, help="chunk length in milliseconds")
    push.add_argument("--realtime", action="store_true", help="send at the audio's own pace")
    push.add_argument("--stream-id", default=None, help="stream id (default: a new UUID)")
    push.add_argument("--tls-ca", type=Path, default=None, help="CA bundle: connect with TLS")
    push.set_defaults(func=_cmd_push)

    detect = sub.add_parser(
        "detect", help="detect events in audio files in one process (no Kafka needed)"
    )
    detect.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="audio files")
    detect.add_argument(
        "--model",
        type=Path,
        default=Path("models"),
        help="directory of model cards (default: models)",
    )
    detect.add_argument("--format", choices=["table", "json", "csv"], default="table")
    detect.add_argument("--plot", type=Path, default=None, help="draw scores and events to a PNG")
    detect.set_defaults(func=_cmd_detect)

    evaluate = sub.add_parser(
        "evaluate",
        help="DCASE event- and segment-based metrics of detected events against a reference",
    )
    evaluate.add_argument(
        "reference", type=Path, help="reference events (file, onset, offset, label)"
    )
    evaluate.add_argument(
        "system", type=Path, nargs="?", default=None, help="detected events, same format"
    )
    evaluate.add_argument(
        "--audio",
        type=Path,
        nargs="+",
        default=None,
        metavar="FILE",
        help="instead of detected events: detect over these recordings (matched to the "
        "reference by file name) and sweep each label's threshold, printing recall and "
        "false alarms per hour at each (the curve an operating point is chosen on)",
    )
    evaluate.add_argument(
        "--model", type=Path, default=Path("models"), help="with --audio: model directory"
    )
    evaluate.add_argument(
        "--thresholds",
        type=float,
        nargs="+",
        default=None,
        metavar="T",
        help="with --audio: on-thresholds to sweep (default 0.05 .. 0.99)",
    )
    evaluate.add_argument(
        "--plot",
        type=Path,
        default=None,
        help="with --audio: draw recall against false alarms per hour and precision-recall "
        "to a PNG",
    )
    evaluate.add_argument(
        "--match",
        choices=["name", "path"],
        default="name",
        help="how detected events' files are matched to the reference's: by base name "
        "(default: 'recordings/a.wav' is 'a.wav') or by the exact path",
    )
    evaluate.add_argument("--collar-s", type=float, default=0.2, help="onset collar (s)")
    evaluate.add_argument(
        "--offset-percentage",
        type=float,
        default=0.5,
        help="offset collar as a share of the reference event's length (at least the collar)",
    )
    evaluate.add_argument("--segment-s", type=float, default=1.0, help="segment length (s)")
    evaluate.add_argument("--format", choices=["table", "json"], default="table")
    evaluate.set_defaults(func=_cmd_evaluate)

    _add_dataset_commands(sub)

    _add_model_commands(sub)

    _add_simulate_command(sub)

    kafka = sub.add_parser(
        "kafka-local", help="fetch (Maven Central) or run a local Kafka broker for development"
    )
    kafka.add_argument("action", choices=["fetch", "run"])
    kafka.add_argument("--port", type=int, default=9092)
    kafka.set_defaults(func=_cmd_kafka_local)
    _add_examples(sub)
    return parser


# One example a command, shown at the end of its --help.
_EXAMPLES = {
    "topics": "SOUNDSENTRY_KAFKA_BOOTSTRAP_SERVERS=kafka:9092 soundsentry topics create",
    "ingest": "SOUNDSENTRY_INGEST_TOKENS_FILE=tokens.json soundsentry ingest",
    "featurizer": "SOUNDSENTRY_KAFKA_BOOTSTRAP_SERVERS=kafka:9092 soundsentry featurizer",
    "classifier": "SOUNDSENTRY_CLASSIFIER_MODEL_DIR=models soundsentry classifier",
    "alerter": "SOUNDSENTRY_NOTIFY_DESTINATIONS_FILE=destinations.json soundsentry alerter",
    "serve": "SOUNDSENTRY_INGEST_TOKENS_FILE=tokens.json soundsentry serve",
    "push": "soundsentry push kitchen.flac --sensor kitchen/mic-1 --token TOKEN --realtime",
    "detect": "soundsentry detect recording.flac --plot events.png",
    "evaluate": "soundsentry evaluate truth.tsv --audio recordings/*.flac --plot curve.png",
    "dataset": "soundsentry dataset synth --data-dir ../shared/data --out data/mix --train 2000",
    "train": "soundsentry train data/mix --out models/mine --epochs 30",
    "calibrate": "soundsentry calibrate models/mine/default.json data/mix",
    "quantize": "soundsentry quantize models/mine/default.json data/mix",
    "compose": "soundsentry compose base.json alarms.json --dataset data/mix --out c.json "
    "--model-version 1.0.0",
    "simulate": "soundsentry simulate --sensors 200 --duration 60 --truth truth.tsv",
    "stack": "soundsentry stack --sensors 20",
    "kafka-local": "soundsentry kafka-local run --port 9092",
}


def _add_examples(sub: Any) -> None:
    for name, command in sub.choices.items():
        example = _EXAMPLES.get(name)
        if example:
            command.epilog = f"example: {example}"


def _check_environment() -> None:
    """Refuse misspelled settings (``SOUNDSENTRY_TOPICS_PARTITION``), naming the nearest."""
    if not any(name.startswith("SOUNDSENTRY_") for name in os.environ):
        return
    from soundsentry.services.catalog import unknown_variables  # noqa: PLC0415

    problems = unknown_variables(os.environ)
    if problems:
        raise ConfigurationError("; ".join(problems))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        _check_environment()
        code: int = args.func(args)
    except SoundSentryError as exc:
        # A clear message, not a traceback: these are problems with input or configuration.
        print(f"soundsentry: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        message = _expected_failure(exc)
        if message is None or args.debug:
            raise
        print(f"soundsentry: error: {message} (--debug shows the traceback)", file=sys.stderr)
        return 2
    return code


def _expected_failure(exc: Exception) -> str | None:
    """One line for the failures a user meets first (settings, no broker, no ingest), None
    for anything else (a bug: its traceback is what helps)."""
    from pydantic import ValidationError  # noqa: PLC0415

    if isinstance(exc, ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        return f"invalid {exc.title}: {problems}"
    module = type(exc).__module__
    if module.startswith("aiokafka"):
        from aiokafka.errors import KafkaConnectionError  # noqa: PLC0415

        if not isinstance(exc, KafkaConnectionError):
            return None
        return (
            f"cannot reach Kafka ({exc}): start a broker (soundsentry kafka-local run) or set "
            "SOUNDSENTRY_KAFKA_BOOTSTRAP_SERVERS"
        )
    if module.startswith("grpc"):
        import grpc  # noqa: PLC0415

        if isinstance(exc, grpc.aio.AioRpcError):
            hint = (
                ": is soundsentry ingest (or serve) running there?"
                if exc.code() == grpc.StatusCode.UNAVAILABLE
                else ""
            )
            return f"ingest answered {exc.code().name}: {exc.details()}{hint}"
    return None


if __name__ == "__main__":
    sys.exit(main())
