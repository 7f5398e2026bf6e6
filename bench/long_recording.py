r"""Digits in a long, noisy recording: does `cnncli predict --segment` find them and name them?

Builds a recording the way a user would make one: digits of one FSDD speaker the bundle never
heard, separated by 0.6 to 1.4 s pauses, over steady room noise (pink noise, mains hum and a
slow swell) with each digit 10 to 30 dB above it, resampled to 44.1 kHz stereo, 16-bit; and a
truth file (onset, end, label). Then runs the bundle over it with --segment and reports:

- recall: share of digits with a detected event starting within 0.25 s of their onset
- false events: share of detected events that start within 0.25 s of no digit
- label accuracy: share of the found digits whose event has the right label

    cnncli train recipes/fsdd.yaml --set 'data.split.test_pattern=^\d_jackson_' --out runs/fsdd-no-jackson
    python bench/long_recording.py --bundle runs/fsdd-no-jackson --speaker jackson
    python bench/long_recording.py --bundle runs/fsdd-no-jackson --speaker jackson --minutes 60 --memory

--memory runs the command line on the recording and on a one-minute one, in a subprocess each,
and prints their peak memory: it should not grow with the length. Prints one JSON line last.

--kind builds the other kinds of recording of bench/recordings.py instead (gated clips between
room noise, fades and a fan, 50/60 Hz hum, clicks and thumps, a music bed, 0-30 dB SNR, every
rate and channel count; `all`: each of them), prints a JSON line per recording and one last
with the figures per kind (and, for `snr`, the share found per SNR band). --detect-only scores
cnncli's event finder alone (found and false events; no bundle, so any speakers at once):

    python bench/long_recording.py --detect-only --kind all --speaker george,jackson,nicolas,theo,yweweler
    python bench/long_recording.py --bundle runs/fsdd-no-theo --speaker theo --kind all [--latency 0.5]
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import recordings  # bench/recordings.py, beside this script
from recordings import speaker_digits, speech_power

REPO = Path(__file__).resolve().parent.parent
RECORDINGS = REPO.parent / "shared" / "data" / "fsdd" / "recordings"
RATE, CHANNELS = 44100, 2
GAP_SECONDS = (0.6, 1.4)
ONSET_TOLERANCE = 0.25
NOISE_DBFS = -50.0  # the room noise's power


def room_noise(length: int, generator: np.random.Generator, start: int = 0) -> np.ndarray:
    """(length, 2) room tone at NOISE_DBFS: pink noise, 50 Hz hum with harmonics, a slow swell;
    the two channels correlated (one room, two microphones)."""
    def pink() -> np.ndarray:
        spectrum = np.fft.rfft(generator.standard_normal(length))
        spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1))
        spectrum[0] = 0
        signal = np.fft.irfft(spectrum, n=length)
        return signal / np.sqrt(np.mean(signal ** 2))
    time = (start + np.arange(length)) / RATE
    hum = sum(np.sin(2 * np.pi * 50 * k * time + k) / k for k in (1, 2, 3)) * 0.3
    swell = 10 ** (3 * np.sin(2 * np.pi * time / 7.0) / 20)  # +-3 dB over 7 s
    left, right = pink(), pink()
    mono = (left + hum) * swell
    stereo = np.stack([mono, 0.8 * mono + 0.6 * right * swell], axis=1)
    return stereo * 10 ** (NOISE_DBFS / 20) / np.sqrt(np.mean(mono ** 2))


def build(out: Path, digits: list[tuple[Path, str]], seed: int, minutes: float | None) -> list[dict]:
    """Write the recording at `out` block by block; returns the truth rows."""
    import torch
    import torchaudio.functional as audio_functional

    generator = np.random.default_rng(seed + 1)
    truth, position = [], round(1.0 * RATE)
    total = round(minutes * 60 * RATE) if minutes else None
    with soundfile.SoundFile(out, "w", RATE, CHANNELS, subtype="PCM_16") as handle:
        written, index = 0, 0
        while True:
            path, label = digits[index % len(digits)]
            index += 1
            audio, rate = soundfile.read(path, dtype="float32")
            word = audio_functional.resample(torch.from_numpy(audio), rate, RATE).numpy()
            snr = generator.uniform(10, 30)
            word *= np.sqrt(10 ** ((NOISE_DBFS + snr) / 10) / speech_power(word, RATE))
            end = position + len(word)
            if (total and end + RATE > total) or (not total and index > len(digits)):
                break
            block = room_noise(end - written, generator, written)
            block[position - written:, 0] += word
            block[position - written:, 1] += word * 0.9
            handle.write(np.clip(block, -1, 1))
            truth.append({"onset": round(position / RATE, 4), "end": round(end / RATE, 4), "label": label,
                          "snr_db": round(snr, 1), "file": path.name})
            written = end
            position = end + round(generator.uniform(*GAP_SECONDS) * RATE)
        handle.write(room_noise(position + RATE - written, generator, written))
    return truth


def matches(events: list[dict], truth: list[dict]) -> dict[int, int]:
    """{truth row: event} one to one by onset (nearest first, within the tolerance)."""
    pairs = sorted((abs(event["start"] - digit["onset"]), e, t) for e, event in enumerate(events)
                   for t, digit in enumerate(truth) if abs(event["start"] - digit["onset"]) <= ONSET_TOLERANCE)
    matched: dict[int, int] = {}
    for _, e, t in pairs:
        if e not in matched.values() and t not in matched:
            matched[t] = e
    return matched


def score(events: list[dict], truth: list[dict]) -> dict:
    """Found (recall), false events and labels right, matching events to digits by onset."""
    matched = matches(events, truth)
    right = sum(events[e]["label"] == truth[t]["label"] for t, e in matched.items())
    found = len(matched)
    matched_events = set(matched.values())
    return {"digits": len(truth), "events": len(events), "found": found,
            "recall": round(found / max(len(truth), 1), 4),
            "false_events": round((len(events) - len(matched_events)) / max(len(events), 1), 4),
            "label_accuracy": round(right / max(found, 1), 4)}


def peak_memory_mb(command: list[str]) -> tuple[float, float]:
    """(peak resident MB, seconds) of a command run in its own process."""
    runner = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
              "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
              "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, time.perf_counter() - t)")
    done = subprocess.run([sys.executable, "-c", runner, *command], capture_output=True, text=True, check=True)
    memory, seconds = done.stdout.split()
    return round(float(memory), 1), round(float(seconds), 1)


def found_events(recording: Path, bundle, adapt: bool, latency: float | None) -> list[dict]:
    """The events of `predict --segment` (with a loaded bundle), or of the event finder alone (None)."""
    if bundle is None:
        from cnncli.modalities.audio.events import DEFAULT_LATENCY, find_events
        from cnncli.modalities.audio.options import AudioOptions

        spans = find_events(str(recording), AudioOptions(sample_rate=8000), lambda waves: waves[:, :1],
                            latency=latency or DEFAULT_LATENCY)
        return [{"start": start, "end": end, "label": None} for batch, _ in spans for start, end in batch]
    from cnncli.verbs.predict import predict

    events = [{"start": row.start, "end": row.end, "label": row.label, "score": row.score, "error": row.error}
              for row in predict(bundle, [str(recording)], segment=True, workers=0, adapt=adapt, latency=latency)]
    errors = [row["error"] for row in events if row["error"]]
    if errors:
        raise SystemExit(f"predict failed: {errors[0]}")
    return events


def recall_by_snr(events: list[dict], truth: list[dict], edges=(0, 5, 10, 20, 30)) -> dict:
    """Share of the digits found, per band of SNR."""
    matched = matches(events, truth)
    shares = {}
    for low, high in itertools.pairwise(edges):
        rows = [t for t, digit in enumerate(truth) if low <= digit["snr_db"] < high]
        shares[f"{low}-{high} dB"] = round(sum(t in matched for t in rows) / max(len(rows), 1), 3)
    return shares


def every_kind(args, folder: Path) -> None:
    """--kind: each kind's recordings for each speaker, a JSON line per recording, then per kind."""
    kinds = list(recordings.KINDS) + ["formats"] if args.kind == "all" else args.kind.split(",")
    bundle = None
    if args.bundle:
        from cnncli.bundle.io import load_bundle

        bundle = load_bundle(args.bundle)
    totals: dict[str, dict] = {}
    for speaker in args.speaker.split(","):
        digits = speaker_digits(args.folder, speaker, args.digits, args.seed)
        for kind in kinds:
            formats = recordings.FORMATS if kind == "formats" else [recordings.KINDS[kind]]
            for rate, channels in formats:
                recording = folder / f"{speaker}-{kind}-{rate}-{channels}.wav"
                truth = recordings.build(recording, digits, "steady" if kind == "formats" else kind, args.seed,
                                         rate, channels)
                events = found_events(recording, bundle, args.adapt, args.latency)
                result = {"speaker": speaker, "kind": kind, "rate": rate, "channels": channels,
                          **score(events, truth)}
                if kind == "snr":
                    result["found_by_snr"] = recall_by_snr(events, truth)
                print(json.dumps(result), flush=True)
                total = totals.setdefault(kind, {"digits": 0, "events": 0, "found": 0, "false": 0, "right": 0,
                                                 "worst_found": 1.0})
                total["worst_found"] = min(total["worst_found"], result["recall"])
                for key in ("digits", "events", "found"):
                    total[key] += result[key]
                total["false"] += round(result["false_events"] * result["events"])
                total["right"] += round(result["label_accuracy"] * result["found"])
    print(json.dumps({"bundle": str(args.bundle) if args.bundle else None, "latency": args.latency, "kinds": {
        kind: {"found": round(t["found"] / max(t["digits"], 1), 4), "worst_found": t["worst_found"],
               "false_events": round(t["false"] / max(t["events"], 1), 4),
               **({"label_accuracy": round(t["right"] / max(t["found"], 1), 4)} if args.bundle else {}),
               "digits": t["digits"]} for kind, t in totals.items()}}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--bundle", type=Path, help="trained without --speaker (not with --detect-only)")
    parser.add_argument("--speaker", required=True, help="with --detect-only: several, comma-separated")
    parser.add_argument("--digits", type=int, default=40, help="digits in the recording (cycled with --minutes)")
    parser.add_argument("--minutes", type=float, help="make the recording this long instead (for --memory)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folder", type=Path, default=RECORDINGS)
    parser.add_argument("--keep", type=Path, help="write the recording and truth here instead of a temporary folder")
    parser.add_argument("--adapt", action="store_true", help="predict --adapt: the network's batch norm measured "
                        "again on the recording's own sounds first")
    parser.add_argument("--memory", action="store_true", help="also measure peak memory against a 1-minute recording")
    parser.add_argument("--kind", help="kinds of recording of bench/recordings.py, comma-separated, or all")
    parser.add_argument("--detect-only", action="store_true", help="score the event finder alone (no --bundle)")
    parser.add_argument("--latency", type=float, help="predict --segment --latency S [default: cnncli's]")
    args = parser.parse_args()

    if args.detect_only == bool(args.bundle):
        raise SystemExit("give --bundle, or --detect-only without one")
    for speaker in args.speaker.split(",") if args.bundle else []:
        bundle_info = json.loads((args.bundle / "model.json").read_text())
        pattern = bundle_info["recipe"]["data"]["split"].get("test_pattern") or ""
        if not re.search(pattern or "(?!)", f"7_{speaker}_10.wav"):
            raise SystemExit(f"{args.bundle}: trained on {speaker}'s recordings (test_pattern {pattern!r}); "
                             "use a bundle that held the speaker out")
    folder = args.keep or Path(tempfile.mkdtemp(prefix="long-recording-"))
    folder.mkdir(parents=True, exist_ok=True)
    if args.kind:
        return every_kind(args, folder)
    recording, truth_file = folder / f"{args.speaker}-long.wav", folder / f"{args.speaker}-long.truth.jsonl"
    digits = speaker_digits(args.folder, args.speaker, args.digits, args.seed)
    truth = build(recording, digits, args.seed, args.minutes)
    truth_file.write_text("".join(json.dumps(row) + "\n" for row in truth))

    from cnncli.bundle.io import load_bundle

    started = time.perf_counter()
    events = found_events(recording, load_bundle(args.bundle) if args.bundle else None, args.adapt, args.latency)
    seconds = time.perf_counter() - started
    result = {"speaker": args.speaker, "bundle": str(args.bundle), "adapt": args.adapt, "seconds_of_audio": round(
        soundfile.info(str(recording)).duration, 1), "predict_seconds": round(seconds, 2), **score(events, truth)}
    if args.memory and args.bundle:
        command = [sys.executable, "-m", "cnncli", "predict", str(args.bundle), "--segment", "--format", "csv",
                   *(["--adapt"] if args.adapt else [])]
        short = folder / "one-minute.wav"
        build(short, digits, args.seed, 1.0)
        result["peak_mb_1min"], _ = peak_memory_mb([*command, str(short)])
        result["peak_mb_full"], result["cli_seconds_full"] = peak_memory_mb([*command, str(recording)])
    print(f"recording {recording} ({result['seconds_of_audio']} s, {RATE} Hz stereo), truth {truth_file}",
          file=sys.stderr)
    print(f"cnncli predict {args.bundle} {recording} --segment --format csv{' --adapt' if args.adapt else ''}",
          file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
