"""`creditq campaign send --csv FILE --from NUMBER --body TEXT`: a campaign from a CSV, with a progress bar.

Through the HTTP API (`--api URL --key KEY`) or, without them, straight into DATABASE_URL with the
fan-out enqueued on the broker (CREDITQ_BROKER). The bar follows the campaign until every sendable recipient's message
has left the queue (sent, delivered, failed, canceled or skipped) or `--no-wait`.
"""

import argparse
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from intake.body_limits import MAX_BULK_BODY_BYTES
from shared.config import ConfigError, load_settings
from shared.text_files import read_text

DONE_COUNTS = ("sent", "delivered", "failed", "canceled", "skipped")


def register(subparsers) -> None:
    parser = subparsers.add_parser("campaign", help="send a campaign from a CSV file")
    actions = parser.add_subparsers(dest="action", required=True)
    send = actions.add_parser("send", help="create a campaign and follow it with a progress bar")
    send.add_argument("--csv", required=True, type=Path, help="CSV with a header row: a `to` column, fields")
    send.add_argument("--from", dest="from_", required=True, metavar="NUMBER", help="one of the account's senders")
    send.add_argument("--body", required=True, help="Liquid template, e.g. 'Hi {{ first_name }}'")
    send.add_argument("--name", help="campaign name (default: the CSV's file name)")
    send.add_argument("--account", help="the account (required with the operator key or a direct database)")
    send.add_argument("--send-at", help="ISO-8601 time with an offset to start later")
    send.add_argument("--api", help="intake base URL, e.g. http://127.0.0.1:8080 (default: the database directly)")
    send.add_argument("--key", help="API key for --api")
    send.add_argument("--no-wait", action="store_true", help="print the campaign and return after acceptance")
    send.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    csv_text = read_text(args.csv, most=MAX_BULK_BODY_BYTES, label="--csv", encoding="utf-8-sig")
    payload = {"name": args.name or args.csv.name, "from": args.from_, "body": args.body, "csv": csv_text,
               "send_at": args.send_at}
    client = _Api(args.api, args.key) if args.api else _Direct(args.account)
    if args.api and args.account:
        payload["account_id"] = args.account
    answer = client.create(payload)
    console = Console(stderr=True)
    console.print(f"campaign {answer['id']} {answer['status']}: {json.dumps(answer['estimate'])}")
    if args.no_wait:
        print(json.dumps(answer))
        return 0
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task(answer["id"], total=answer["estimate"]["recipients"])
        while True:
            view = client.read(answer["id"])
            counts = view["counts"]
            progress.update(task, completed=sum(counts[name] for name in DONE_COUNTS),
                            description=f"{view['status']} (queued {counts['queued']}, scheduled {counts['scheduled']}, "
                                        f"parked {counts['parked']})")
            if view["status"] in ("completed", "canceled"):
                break
            time.sleep(1)
    print(json.dumps(view))
    return 0


class _Api:
    def __init__(self, base_url: str, key: str | None):
        if not key:
            raise ConfigError("--api needs --key")
        try:
            parts = urllib.parse.urlsplit(base_url)
        except ValueError:  # "Invalid IPv6 URL"
            parts = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"--api {base_url!r} is not an http(s) URL such as http://127.0.0.1:8080")
        self.base_url, self.key = base_url.rstrip("/"), key

    def create(self, payload: dict) -> dict:
        return self._call("POST", "/v1/campaigns", {k: v for k, v in payload.items() if v is not None})

    def read(self, campaign_id: str) -> dict:
        return self._call("GET", f"/v1/campaigns/{campaign_id}")

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(self.base_url + path, method=method,
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Authorization": f"Bearer {self.key}",
                                                  "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            problem = json.loads(error.read() or b"{}")
            errors = "; ".join(f"{k} {v}" for k, v in (problem.get("errors") or {}).items())
            raise ConfigError(f"{error.code} {problem.get('title', '')}: {errors or problem.get('detail', '')}") \
                from None
        except urllib.error.URLError as error:
            raise ConfigError(f"cannot reach {self.base_url}: {error.reason}") from None


class _Direct:
    """The database on DATABASE_URL and the broker CREDITQ_BROKER names, as `creditq worker` would use them."""

    def __init__(self, account_id: str | None):
        if not account_id:
            raise ConfigError("--account is required without --api")
        from shared.db import Database

        self.account_id = account_id
        self.settings = load_settings()
        self.database = Database(self.settings.database_url)

    def create(self, payload: dict) -> dict:
        from shared.campaigns.creation import CampaignRequest, create_campaign
        from shared.messaging.rates import current_rate_card
        from shared.messaging.send_cap import SendCap

        campaign, estimate = create_campaign(self.database, self.account_id, CampaignRequest(
            name=payload["name"], from_=payload["from"], body=payload["body"], csv=payload["csv"],
            send_at=payload["send_at"]), rate_card=current_rate_card(self.database.engine), now=datetime.now(UTC),
            cap=SendCap.from_settings(self.settings))
        answer = {"id": campaign.id, "status": campaign.status, "estimate": estimate.as_dict()}
        if answer["status"] == "running":
            try:
                from workers.campaigns import fan_out_campaign

                fan_out_campaign.send(answer["id"], 0)
            except Exception as error:  # noqa: BLE001 - the scheduler's campaign_steps job starts it anyway
                print(f"could not enqueue the fan-out ({error}); the scheduler will start it", file=sys.stderr)
        return answer

    def read(self, campaign_id: str) -> dict:
        from shared.campaigns.steering import campaign_view, get_campaign

        with self.database.unit_of_work() as session:
            return campaign_view(session, get_campaign(session, campaign_id, account_id=self.account_id))
