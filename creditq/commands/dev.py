"""`creditq dev`: the whole stack in one terminal on embedded defaults; Ctrl-C stops every child."""

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
import webbrowser

from shared.config import load_settings
from shared.migrate import upgrade
from shared.redis_url import resolve_redis_url

from .db import load_priced_files
from .ports import refuse_any_taken

PROCESSES = ("twilio-sim", "stripe-sim", "web", "worker", "scheduler")


def register(subparsers) -> None:
    parser = subparsers.add_parser("dev", help="run web, worker, scheduler, the Twilio simulator, the Stripe stand-in "
                                               "and Redis together")
    parser.add_argument("--open", action="store_true", help="open the web console in the default browser once ready")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    os.environ["CREDITQ_ENV"] = "development"  # the stand-ins and their well-known secrets, webhooks to localhost
    os.environ["CREDITQ_BROKER"] = "redis"  # one machine: its embedded Redis queues the jobs too
    settings = load_settings()
    stand_in = settings.payment_gateway == "stripe" and not os.environ.get("STRIPE_API_BASE")
    refuse_any_taken([
        (settings.web_host, settings.web_port, "PORT", "HOST"),
        ("127.0.0.1", settings.simulator_port, "CREDITQ_SIMULATOR_PORT", "HOST"),
        *([("127.0.0.1", settings.stripe_sim_port, "CREDITQ_STRIPE_SIM_PORT", "HOST")] if stand_in else []),
        (settings.metrics_host, settings.worker_metrics_port, "CREDITQ_WORKER_METRICS_PORT", "CREDITQ_METRICS_HOST"),
        (settings.metrics_host, settings.scheduler_metrics_port, "CREDITQ_SCHEDULER_METRICS_PORT",
         "CREDITQ_METRICS_HOST"),
    ])
    redis_url, embedded = resolve_redis_url(settings)
    children: dict[str, subprocess.Popen] = {}
    stopping = False

    def request_stop(*_):
        nonlocal stopping
        stopping = True

    for stop_signal in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGHUP: the terminal went away
        signal.signal(stop_signal, request_stop)
    try:
        upgrade(settings.database_url)
        load_priced_files(settings.database_url)  # as `creditq db upgrade` does: the sends record the card's version
        env = dict(os.environ, REDIS_URL=redis_url, DATABASE_URL=settings.database_url,
                   CREDITQ_ADMIN_KEY=settings.admin_key, CREDITQ_SECRET_KEY=",".join(settings.secret_keys),
                   CREDITQ_DATA_DIR=str(settings.data_dir), CREDITQ_ENV="development",
                   TWILIO_API_BASE=settings.twilio_api_base or f"http://127.0.0.1:{settings.simulator_port}")
        for name in (name for name in PROCESSES if name != "stripe-sim" or stand_in):
            # Each child leads its own process group, so stopping it also stops what it forked.
            children[name] = subprocess.Popen([sys.executable, "-m", "creditq", name], env=env,
                                              start_new_session=True, stdin=subprocess.DEVNULL)
        base = f"http://{settings.web_host}:{settings.web_port}"
        ready = [f"{base}/healthz", f"http://127.0.0.1:{settings.simulator_port}/_sim/config"]  # then the banner
        ready += [f"{settings.stripe_api_base}/_sim/config"] if stand_in else []
        if all(_wait_healthy(url, children, lambda: stopping) for url in ready):
            _print_banner(base, settings, redis_url)
            if args.open:
                webbrowser.open(f"{base}/")
        while not stopping:
            for name, child in children.items():
                if child.poll() is not None:
                    print(f"creditq dev: {name} exited with {child.returncode}; stopping the stack", file=sys.stderr)
                    stopping = True
            time.sleep(0.2)
        return 0 if all(child.poll() is None for child in children.values()) else 1
    finally:
        _stop_all(children.values())
        if embedded is not None:
            embedded.stop()


def _wait_healthy(url: str, children: dict[str, subprocess.Popen], stopping, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stopping():
        if any(child.poll() is not None for child in children.values()):
            return False
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return True
        except OSError:
            time.sleep(0.2)
    return False


def _stop_all(children, grace: float = 10) -> None:
    for child in children:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in children:
        try:
            child.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()


def _print_banner(base: str, settings, redis_url: str) -> None:
    admin_key = settings.admin_key
    stripe = (f"{settings.stripe_api_base}   (PaymentIntents: /_sim/payment_intents, events: /_sim/events)"
              if settings.payment_gateway == "stripe" else f"PAYMENT_GATEWAY={settings.payment_gateway}")
    print(f"""
creditq is running
  console      {base}/   (sign in with the operator key below, or an account or user key)
  API          {base}   (OpenAPI: {base}/v1/openapi.json)
  metrics      {base}/metrics (operator key); worker and scheduler at {settings.metrics_host}:{settings.worker_metrics_port} \
and :{settings.scheduler_metrics_port}
  Twilio sim   http://127.0.0.1:{settings.simulator_port}   (sent messages: /_sim/messages)
  Stripe       {stripe}
  Redis        {redis_url}
  operator key {admin_key}

Try:
  curl -s -H 'Authorization: Bearer {admin_key}' -H 'Content-Type: application/json' \\
       -d '{{"body": "Hello from creditq 👋", "to": ["+14155550100"]}}' {base}/v1/estimate

Ctrl-C stops everything.
""", flush=True)
