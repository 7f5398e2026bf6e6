r"""A live stream: how soon after a word ends does `cnncli predict --segment --stream -` print its row?

Builds a recording of one held-out speaker's digits (bench/recordings.py, any kind), then plays
it at real time into `cnncli predict BUNDLE --segment --stream - --latency S --format jsonl`
through a pipe (a WAV stream, header first, written 20 ms at a time on the clock), and times each
row from the moment the last sample of its digit was written. Digits ending in the first
--warmup seconds are not timed (the command starts up meanwhile and catches up). Then runs
`--segment` on the file (at cnncli's default latency, and at the stream's) and scores all three
with bench/long_recording.py's score: found, false events, labels right.

    python bench/live_stream.py --bundle runs/fsdd-no-theo --speaker theo --kind steady --latency 0.5

Prints one JSON line: delays (median, 90th percentile, worst) and the scores.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import recordings  # bench/recordings.py, beside this script
from long_recording import RECORDINGS, score

CHUNK_SECONDS = 0.02


def play(command: list[str], recording: Path) -> tuple[list[dict], list[float], float, float]:
    """Rows of `command` fed `recording` at real time, the clock time each row came, the clock
    time the first audio sample was due, and the bytes per second."""
    data = recording.read_bytes()
    info = soundfile.info(str(recording))
    header = len(data) - info.frames * info.channels * 2  # 16-bit PCM: the rest is the header
    per_second = info.samplerate * info.channels * 2
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    rows, arrivals = [], []

    def read() -> None:
        for line in process.stdout:
            arrivals.append(time.monotonic())
            rows.append(json.loads(line))

    reader = threading.Thread(target=read)
    reader.start()
    process.stdin.write(data[:header])
    start = time.monotonic()
    chunk = round(CHUNK_SECONDS * info.samplerate) * info.channels * 2
    for position in range(header, len(data), chunk):
        time.sleep(max(0.0, start + (position - header) / per_second - time.monotonic()))
        process.stdin.write(data[position:position + chunk])
        process.stdin.flush()
    process.stdin.close()
    process.wait()
    reader.join()
    return rows, arrivals, start, per_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--bundle", type=Path, required=True, help="trained without --speaker")
    parser.add_argument("--speaker", required=True)
    parser.add_argument("--kind", default="steady", choices=list(recordings.KINDS))
    parser.add_argument("--digits", type=int, default=40)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of the stream not timed")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="live-stream-"))
    recording = folder / f"{args.speaker}-{args.kind}.wav"
    digits = recordings.speaker_digits(RECORDINGS, args.speaker, args.digits, args.seed)
    truth = recordings.build(recording, digits, args.kind, args.seed)
    cnncli = [sys.executable, "-m", "cnncli", "predict", str(args.bundle), "--segment", "--format", "jsonl"]
    rows, arrivals, start, _ = play([*cnncli, "--stream", "-", "--latency", str(args.latency)], recording)
    streamed = [{"start": row["start"], "label": row["label"]} for row in rows]
    delays = []
    for digit in truth:
        if digit["end"] < args.warmup:
            continue
        heard = [arrived for row, arrived in zip(rows, arrivals) if abs(row["start"] - digit["onset"]) <= 0.25]
        if heard:
            delays.append(heard[0] - (start + digit["end"]))
    result = {"speaker": args.speaker, "kind": args.kind, "latency": args.latency, "timed": len(delays),
              "delay_median": round(float(np.median(delays)), 3) if delays else None,
              "delay_p90": round(float(np.percentile(delays, 90)), 3) if delays else None,
              "delay_worst": round(max(delays), 3) if delays else None, "stream": score(streamed, truth)}
    for name, extra in (("file", []), ("file_same_latency", ["--latency", str(args.latency)])):
        done = subprocess.run([*cnncli, str(recording), *extra], capture_output=True, text=True, check=True)
        result[name] = score([json.loads(line) for line in done.stdout.splitlines()], truth)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
