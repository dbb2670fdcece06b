"""Segment counts beside Twilio's own calculator (the npm package sms-segments-calculator), on random bodies.

    python bench/segment_parity.py [--bodies 20000] [--seed 1]

Needs node and npm (the calculator is installed into ~/.cache/creditq-segment-calculator on first
use). Bodies mix GSM-7 text, extension characters, accented and combining letters, emoji with skin
tones and ZWJ joins, flags, keycaps and CJK, 1 to 400 characters. Prints how many the estimate
(shared.messaging.segments) and the simulator (twilio_sim.segments) count as the calculator does,
and the first disagreements. Figures only; nothing here passes or fails.
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.messaging.segments import count_segments  # noqa: E402
from twilio_sim.segments import count_segments as simulator_count  # noqa: E402

CALCULATOR_DIR = Path.home() / ".cache" / "creditq-segment-calculator"
PIECES = [
    *"abcdefghijklmnopqrstuvwxyz ABCDEFGHIJ0123456789.,!?'\"-\n", *"{}[]~^|€\\", *"éüñÁçóØ",
    "e\u0301", "a\u0308\u0301", "\U0001F600", "\U0001F44D\U0001F3FD", "\U0001F469\u200D\U0001F4BB",
    "\U0001F468\u200D\U0001F469\u200D\U0001F467", "\U0001F1FA\U0001F1F8", "1\uFE0F\u20E3", "\u2764\uFE0F",
    "\u4F60\u597D", "\u0416", "\r\n", "\u200B",
]
SCRIPT = """
const {SegmentedMessage} = require('sms-segments-calculator');
const bodies = JSON.parse(require('fs').readFileSync(process.argv[1], 'utf8'));
console.log(JSON.stringify(bodies.map(b => new SegmentedMessage(b).segmentsCount)));
"""


def random_bodies(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    bodies = []
    for _ in range(count):
        plain = rng.random() < 0.3  # some bodies stay GSM-7
        pool = PIECES[:63] if plain else PIECES
        body = "".join(rng.choice(pool) for _ in range(rng.randint(1, 200)))
        bodies.append(body[:400] or "a")
    return bodies


def calculator_counts(bodies: list[str]) -> list[int]:
    if not (CALCULATOR_DIR / "node_modules" / "sms-segments-calculator").exists():
        CALCULATOR_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--silent", "--prefix", str(CALCULATOR_DIR), "sms-segments-calculator"],
                       check=True)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as file:
        json.dump(bodies, file)
    try:
        result = subprocess.run(["node", "-e", SCRIPT, file.name], cwd=CALCULATOR_DIR, check=True,
                                capture_output=True, text=True, env={**os.environ, "NODE_PATH": str(
                                    CALCULATOR_DIR / "node_modules")})
    finally:
        os.unlink(file.name)
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bodies", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if not shutil.which("node") or not shutil.which("npm"):
        raise SystemExit("segment_parity: node and npm are needed to run Twilio's calculator")
    print(f"load average before: {os.getloadavg()}")
    bodies = random_bodies(args.bodies, args.seed)
    theirs = calculator_counts(bodies)
    ours = [count_segments(body).segments for body in bodies]
    simulated = [simulator_count(body) for body in bodies]
    for name, counts in (("estimate", ours), ("simulator", simulated)):
        differ = [(body, mine, calculated) for body, mine, calculated in zip(bodies, counts, theirs)
                  if mine != calculated]
        print(f"{name:9}: {len(bodies) - len(differ):,} of {len(bodies):,} bodies counted as the calculator does")
        for body, mine, calculated in differ[:5]:
            print(f"   {mine} here, {calculated} there: {body!r}")
    print(f"bodies over one segment: {sum(count > 1 for count in theirs):,}; "
          f"UCS-2: {sum(count_segments(body).encoding == 'UCS-2' for body in bodies):,}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
