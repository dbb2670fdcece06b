"""Segment calculations per second (`python bench/segments.py`), beside a baseline measured in the same run.

The baseline is the cheapest thing any counter must do, encoding the body to UTF-16
(`len(body.encode("utf-16-le"))`), so the ratio shows what the rules cost over it on this machine.
Prints figures only; nothing here passes or fails.
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.messaging.segments import count_segments  # noqa: E402

BODIES = {
    "short GSM (24 chars)": "Open house Sunday at 2pm",
    "long GSM (1,600 chars)": ("Reminder: your appointment is tomorrow at 10. Reply C to confirm. " * 25)[:1600],
    "long GSM with escapes (1,600)": ("Save 20% on {all} [items] ~ today only | code: SAVE€20 ^ " * 30)[:1600],
    "short UCS-2 (30 chars)": "Café ☕ at 10, see you there 🙏",
    "long UCS-2 emoji (1,600 chars)": ("Happy holidays 🎄🎁 from all of us at the church ✨ " * 40)[:1600],
    "long with smart quotes, smart encoding": ("It’s “here” — don’t miss it… " * 60)[:1600],
}
SECONDS_PER_CASE = 1.0


def rate(function, body: str) -> float:
    """Calls per second, timing batches until SECONDS_PER_CASE has passed."""
    calls, batch = 0, 1000
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < SECONDS_PER_CASE:
        for _ in range(batch):
            function(body)
        calls += batch
    return calls / elapsed


def main() -> None:
    print(f"{'body':42} {'count_segments/s':>18} {'baseline/s':>14} {'ratio':>7}")
    for name, body in BODIES.items():
        smart = "smart encoding" in name
        counted = rate(lambda text: count_segments(text, smart_encoding=smart), body)
        baseline = rate(lambda text: len(text.encode("utf-16-le")), body)
        result = count_segments(body, smart_encoding=smart)
        print(f"{name:42} {counted:18,.0f} {baseline:14,.0f} {baseline / counted:6.1f}x"
              f"   ({result.encoding}, {result.segments} segments)")


if __name__ == "__main__":
    main()
