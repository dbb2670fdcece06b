"""The only place that talks to Twilio (messages and calls): the official `twilio` package, failures classified into shared.twilio.errors.

One gateway per set of credentials, shared by every worker thread of a process: its HTTP client keeps a pool of
keep-alive connections (urllib3's pool is thread-safe), so a send does not pay a TCP+TLS handshake.
"""

import email.utils
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import unquote, urlencode, urlsplit

import certifi
import requests
import urllib3
from prometheus_client import Counter
from twilio.base import values
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http import HttpClient
from twilio.http.response import Response
from twilio.rest import Client

from shared import fast_json
from shared.config import Settings
from shared.twilio.errors import (
    BAD_CREDENTIALS,
    TRANSIENT_CODES,
    CredentialsRejected,
    OutcomeUnknown,
    PermanentTwilioError,
    TransientTwilioError,
)

log = logging.getLogger(__name__)

STATUS_CALLBACK_PATH = "/webhooks/twilio/status"
DEFAULT_TIMEOUT_SECONDS = 15.0  # TwilioHttpClient's default is None: a hung connection would hang the worker
DEFAULT_POOL_SIZE = 64  # connections kept per host; >= the threads of one worker process
FIND_LIMIT = 100  # messages listed per find: one sender to one recipient since a given day


@dataclass(frozen=True)
class SentMessage:
    """Twilio's answer to a create. `price` is Twilio's decimal string (negative, in price_unit), often None yet.

    `account_sid` is the (sub)account that owns the message: its callbacks are signed with that account's token.
    """

    sid: str
    account_sid: str
    status: str
    num_segments: int | None
    price: str | None
    price_unit: str | None


@dataclass(frozen=True)
class TwilioMessage:
    """A message as Twilio sees it now (fetch), for reconciliation."""

    sid: str
    account_sid: str
    status: str
    num_segments: int | None
    price: str | None
    price_unit: str | None
    error_code: int | None
    error_message: str | None
    date_created: datetime | None = None


@dataclass(frozen=True)
class TwilioCall:
    """A call as Twilio sees it (create's answer, fetch, list): `duration` in seconds once it has ended."""

    sid: str
    account_sid: str
    status: str
    duration: int | None
    answered_by: str | None
    date_created: datetime | None = None


# The progress creditq follows: answered (in-progress) and the end; initiated and ringing would double the
# callbacks of every call and change nothing a call costs.
CALL_PROGRESS_EVENTS = ["answered", "completed"]
TWILIO_API_BASE = "https://api.twilio.com"


class NoAnswer(Exception):
    """The HTTP exchange with Twilio failed: `never_left` when no connection was made (so the request surely did
    not reach Twilio and resending is safe), else Twilio may have acted on it without answering."""

    def __init__(self, reason: Exception, *, never_left: bool):
        super().__init__(str(reason))
        self.never_left = never_left


class PooledHttpClient(HttpClient):
    """The twilio package's HTTP client, on urllib3's connection pool without requests' layers above it.

    requests prepared, hooked and cookie-jarred every create: as much client CPU again as the rest of a send.
    This client builds the same request (the package's headers and form, basic auth) and keeps what mattered
    of TwilioHttpClient: a bounded timeout; connections kept alive and shared by the threads of a process;
    no retries and no redirects, since a resent create is a second text; the environment's proxy (HTTPS_PROXY,
    NO_PROXY...) read once, for the one host it calls. It remembers each thread's last response, because
    TwilioRestException drops the headers (Retry-After), and logs requests at DEBUG only.
    """

    def __init__(self, *, timeout: float = DEFAULT_TIMEOUT_SECONDS, pool_size: int = DEFAULT_POOL_SIZE,
                 api_base: str = TWILIO_API_BASE):
        super().__init__(logging.getLogger("twilio.http_client"), is_async=False, timeout=timeout)
        self.proxy = requests.utils.get_environ_proxies(api_base)
        proxy_url = self.proxy.get(urlsplit(api_base).scheme) or self.proxy.get("all")
        pool = dict(maxsize=pool_size, ca_certs=certifi.where(), retries=False)
        self.pool = _through_proxy(proxy_url, pool) if proxy_url else urllib3.PoolManager(**pool)
        # Without a proxy, the one host it calls has its pool looked up once: PoolManager's parse of each URL and
        # its lookup of the pool were a tenth of a create's client CPU.
        origin = "{0}://{1}".format(*urlsplit(api_base))
        self._home_prefix = origin + "/"
        self._home_pool = None if proxy_url else self.pool.connection_from_url(origin)
        self._last = threading.local()

    def request(self, method: str, url: str, params: dict | None = None, data: dict | None = None,
                headers: dict | None = None, auth: tuple[str, str] | None = None, timeout: float | None = None,
                allow_redirects: bool = False) -> Response:
        self._last.response = None
        headers = dict(headers or {})
        if params:
            url = f"{url}?{_form(params)}"
        body = None
        if data:
            if headers.get("Content-Type") in ("application/json", "application/scim+json"):
                body = fast_json.dumps(data)
            else:
                body = _form(data)
                headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        if auth:
            headers.update(urllib3.make_headers(basic_auth=f"{auth[0]}:{auth[1]}"))
        wait = timeout or self.timeout
        pool = self.pool
        if self._home_pool is not None and url.startswith(self._home_prefix):
            pool, url = self._home_pool, url[len(self._home_prefix) - 1:]
        try:
            answer = pool.request(method.upper(), url, body=body, headers=headers, redirect=False,
                                  timeout=urllib3.Timeout(connect=wait, read=wait))
        except (urllib3.exceptions.HTTPError, OSError) as error:
            # NewConnectionError (refused, unresolvable) is a ConnectTimeoutError: neither sent a byte
            raise NoAnswer(error, never_left=isinstance(error, urllib3.exceptions.ConnectTimeoutError)) from error
        response = Response(answer.status, answer.data.decode("utf-8", errors="replace"), answer.headers)
        if self.logger.isEnabledFor(logging.DEBUG):  # the path only: the query names phone numbers
            self.logger.debug("%s %s -> %d", method.upper(), urlsplit(url).path, answer.status)
        self._last.response = response
        return response

    def last_response(self) -> Response | None:
        """The response the calling thread received last, if its last request got one."""
        return getattr(self._last, "response", None)

    def close(self) -> None:
        """Close the kept-alive connections; a later request opens new ones."""
        if self._home_pool is not None:
            self._home_pool.close()
            self._home_pool = None
        self.pool.clear()


def _through_proxy(proxy_url: str, pool: dict) -> urllib3.ProxyManager:
    """A pool that goes through the proxy as requests would: `host:port` is http://, and the URL's user and
    password (percent-encoded there) sign in with Proxy-Authorization."""
    if "://" not in proxy_url:
        proxy_url = f"http://{proxy_url}"
    parts = urlsplit(proxy_url)
    login = (urllib3.make_headers(proxy_basic_auth=f"{unquote(parts.username)}:{unquote(parts.password or '')}")
             if parts.username else None)
    return urllib3.ProxyManager(proxy_url, proxy_headers=login, **pool)


def _form(values: dict) -> str:
    """Form encoding as requests does it: a list is the key repeated, a None value is left out."""
    return urlencode([(key, value) for key, value in values.items() if value is not None], doseq=True)


# Every create's outcome, by Twilio's error code ("" for none): a worker process counts its own, and `creditq worker`
# sums its processes' at its metrics port.
SEND_OUTCOMES = Counter("creditq_twilio_sends_total", "Message creates at Twilio, by outcome and Twilio error code",
                        ["outcome", "error_code"])
_OUTCOMES = {TransientTwilioError: "transient", PermanentTwilioError: "permanent", CredentialsRejected: "credentials"}


class TwilioGateway:
    """Sends and fetches messages for one Twilio account (or subaccount), and proves its credentials.

    `api_base` None means Twilio itself; any other URL (the simulator) replaces the Api domain's base
    URL, so paths, auth, form encoding and error parsing stay the twilio package's own.
    """

    def __init__(self, account_sid: str, auth_token: str, api_base: str | None, status_callback_url: str, *,
                 timeout: float = DEFAULT_TIMEOUT_SECONDS, pool_size: int = DEFAULT_POOL_SIZE):
        self.account_sid = account_sid
        self.status_callback_url = status_callback_url
        self.http_client = PooledHttpClient(timeout=timeout, pool_size=pool_size, api_base=api_base or TWILIO_API_BASE)
        client = Client(account_sid, auth_token, http_client=self.http_client)
        if api_base is not None:
            client.edge = client.region = None  # they would rewrite the host into api.<edge>.<region>.twilio.com
            client.api.base_url = api_base.rstrip("/")
        # Resolved once here: the package builds these lazily, which is not worth racing over in threads.
        self._messages = client.api.account.messages
        self._calls = client.api.account.calls
        self._account = client.api.v2010.accounts(account_sid)

    def send(self, *, to: str, from_: str, body: str, media_urls: list[str] | None = None) -> SentMessage:
        """Create the message at Twilio, with our status callback. Raises only shared.twilio.errors classes.

        OutcomeUnknown means the request may have reached Twilio: do not send it again.
        """
        try:
            message = self._messages.create(
                to=to, from_=from_, body=body, media_url=media_urls or values.unset,
                status_callback=self.status_callback_url,
            )
        except (TwilioRestException, TwilioServiceException) as error:
            classified = self._classify(error)
            SEND_OUTCOMES.labels(_OUTCOMES[type(classified)], str(getattr(classified, "code", None) or "")).inc()
            raise classified from error
        except NoAnswer as error:
            if error.never_left:
                SEND_OUTCOMES.labels("transient", "").inc()
                raise TransientTwilioError(f"could not reach Twilio: {error}") from error
            SEND_OUTCOMES.labels("unknown", "").inc()
            raise OutcomeUnknown(f"no answer from Twilio to a create, it may have been sent: {error}") from error
        SEND_OUTCOMES.labels("accepted", "").inc()
        return SentMessage(
            sid=message.sid,
            account_sid=message.account_sid,
            status=message.status,
            num_segments=_int_or_none(message.num_segments),
            price=message.price,
            price_unit=message.price_unit,
        )

    def fetch(self, sid: str) -> TwilioMessage:
        """Twilio's current view of a message; an unknown sid is PermanentTwilioError(20404)."""
        try:
            message = self._messages(sid).fetch()
        except (TwilioRestException, TwilioServiceException) as error:
            raise self._classify(error) from error
        except NoAnswer as error:
            raise TransientTwilioError(f"could not fetch {sid} from Twilio: {error}") from error
        return _twilio_message(message)

    def find(self, *, to: str, from_: str, body: str, sent_after: datetime) -> list[TwilioMessage]:
        """Twilio's messages from `from_` to `to` with this body created since `sent_after`, oldest first.

        For a create whose answer was lost: the sid Twilio gave it. No DateSent> filter: it counts only days
        and skips a message Twilio took but has not sent yet, which would then look never taken and be sent
        twice. The newest FIND_LIMIT of the pair are listed and their creation time checked here.
        """
        try:
            listed = self._messages.list(to=to, from_=from_, limit=FIND_LIMIT)
        except (TwilioRestException, TwilioServiceException) as error:
            raise self._classify(error) from error
        except NoAnswer as error:
            raise TransientTwilioError(f"could not list messages to {to} from Twilio: {error}") from error
        return [_twilio_message(message) for message in reversed(listed)
                if message.body == body and (message.date_created is None or message.date_created >= sent_after)]

    @property
    def public_base_url(self) -> str:
        """Where Twilio reaches creditq: the base of every callback URL."""
        return self.status_callback_url.removesuffix(STATUS_CALLBACK_PATH)

    def place_call(self, *, to: str, from_: str, twiml: str, status_callback: str, time_limit: int | None,
                   machine_detection: bool) -> TwilioCall:
        """Create the call at Twilio with its TwiML, its progress callbacks and the TimeLimit its hold covers.

        Raises only shared.twilio.errors classes; OutcomeUnknown means Twilio may have placed it: do not again.
        """
        try:
            call = self._calls.create(
                to=to, from_=from_, twiml=twiml, status_callback=status_callback,
                status_callback_event=CALL_PROGRESS_EVENTS, time_limit=values.unset if time_limit is None else time_limit,
                machine_detection="DetectMessageEnd" if machine_detection else values.unset,
            )
        except (TwilioRestException, TwilioServiceException) as error:
            raise self._classify(error) from error
        except NoAnswer as error:
            if error.never_left:
                raise TransientTwilioError(f"could not reach Twilio: {error}") from error
            raise OutcomeUnknown(f"no answer from Twilio to a call create, it may have been placed: {error}") from error
        return _twilio_call(call)

    def fetch_call(self, sid: str) -> TwilioCall:
        """Twilio's current view of a call; an unknown sid is PermanentTwilioError(20404)."""
        try:
            return _twilio_call(self._calls(sid).fetch())
        except (TwilioRestException, TwilioServiceException) as error:
            raise self._classify(error) from error
        except NoAnswer as error:
            raise TransientTwilioError(f"could not fetch {sid} from Twilio: {error}") from error

    def find_calls(self, *, to: str, from_: str, placed_after: datetime) -> list[TwilioCall]:
        """Twilio's calls from `from_` to `to` created since `placed_after`, oldest first: for a create whose
        answer was lost."""
        try:
            listed = self._calls.list(to=to, from_=from_, limit=FIND_LIMIT)
        except (TwilioRestException, TwilioServiceException) as error:
            raise self._classify(error) from error
        except NoAnswer as error:
            raise TransientTwilioError(f"could not list calls to {to} from Twilio: {error}") from error
        return [_twilio_call(call) for call in reversed(listed)
                if call.date_created is None or call.date_created >= placed_after]

    def legs_of(self, parent_sid: str) -> list[TwilioCall]:
        """The calls a call's <Dial> made (its forwarded legs)."""
        try:
            return [_twilio_call(call) for call in self._calls.list(parent_call_sid=parent_sid, limit=FIND_LIMIT)]
        except (TwilioRestException, TwilioServiceException) as error:
            raise self._classify(error) from error
        except NoAnswer as error:
            raise TransientTwilioError(f"could not list the legs of {parent_sid} from Twilio: {error}") from error

    def account_status(self) -> str:
        """Twilio's status of this gateway's own account ('active', 'suspended', 'closed').

        Twilio answers only to the account's own auth token: a made-up sid or a wrong token is
        CredentialsRejected. A plain GET, so a network error is only TransientTwilioError.
        """
        try:
            return self._account.fetch().status
        except (TwilioRestException, TwilioServiceException) as error:
            raise self._classify(error) from error
        except NoAnswer as error:
            raise TransientTwilioError(f"could not reach Twilio: {error}") from error

    def close(self) -> None:
        self.http_client.close()

    def _classify(self, error: TwilioRestException | TwilioServiceException) -> Exception:
        status = error.status
        code = error.code if isinstance(error.code, int) else None
        message = getattr(error, "msg", None) or getattr(error, "detail", None) or getattr(error, "title", "")
        if code == BAD_CREDENTIALS or status == 401:
            return CredentialsRejected(self.account_sid, message)
        if status == 429 or status >= 500 or code in TRANSIENT_CODES:
            return TransientTwilioError(
                f"Twilio answered {status} ({code}): {message}", status=status, code=code,
                retry_after=_retry_after(self.http_client.last_response()),
            )
        return PermanentTwilioError(code or status, message, status=status)


MAX_GATEWAYS = 256  # credentials kept per process; one per account with its own Twilio credentials, and rotations


class GatewayCache:
    """The process's gateways by credentials, the least recently used dropped past `max_entries`.

    The key holds the token the caller read from the database for this send, so a token rotated through any
    process is used by every other one at its next send, with no message between them; the old token's gateway
    ages out of the bound. A dropped gateway is not closed: a thread may still be sending with it, and its pooled
    connections close when the last user lets go of it.
    """

    def __init__(self, max_entries: int = MAX_GATEWAYS):
        self._max_entries = max_entries
        self._gateways: OrderedDict[tuple, TwilioGateway] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> TwilioGateway:
        """The gateway for `key` (sid, token, API base, callback URL); a new one waits `timeout` for each answer."""
        with self._lock:
            gateway = self._gateways.get(key)
            if gateway is None:
                gateway = self._gateways[key] = TwilioGateway(*key, timeout=timeout)
                while len(self._gateways) > self._max_entries:
                    self._gateways.popitem(last=False)
            else:
                self._gateways.move_to_end(key)
            return gateway


_gateways = GatewayCache()


def gateway_for(settings: Settings, account_sid: str | None = None, auth_token: str | None = None) -> TwilioGateway:
    """The process's gateway for these credentials (the settings' own by default), made once and reused.

    Settings without TWILIO_API_BASE mean the simulator that `creditq dev` runs on simulator_port.
    """
    sid = account_sid or settings.twilio_account_sid
    token = auth_token or settings.twilio_auth_token
    return _gateways.get((sid, token, _api_base(settings), _callback_url(settings)),
                         timeout=settings.twilio_timeout_seconds)


def account_status(settings: Settings, account_sid: str, auth_token: str) -> str:
    """Twilio's status of the account these credentials open (TwilioGateway.account_status), asked once.

    A gateway of its own, closed afterwards: credentials nobody proved yet are not kept in the shared pool.
    """
    gateway = TwilioGateway(account_sid, auth_token, _api_base(settings), _callback_url(settings),
                            timeout=settings.twilio_timeout_seconds)
    try:
        return gateway.account_status()
    finally:
        gateway.close()


def _api_base(settings: Settings) -> str:
    return settings.twilio_api_base or simulator_url(settings)


def _callback_url(settings: Settings) -> str:
    return settings.public_base_url + STATUS_CALLBACK_PATH


def _twilio_message(message) -> TwilioMessage:
    return TwilioMessage(
        sid=message.sid,
        account_sid=message.account_sid,
        status=message.status,
        num_segments=_int_or_none(message.num_segments),
        price=message.price,
        price_unit=message.price_unit,
        error_code=message.error_code,
        error_message=message.error_message,
        date_created=message.date_created,
    )


def _twilio_call(call) -> TwilioCall:
    return TwilioCall(sid=call.sid, account_sid=call.account_sid, status=call.status,
                      duration=_int_or_none(call.duration), answered_by=call.answered_by,
                      date_created=call.date_created)


def simulator_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.simulator_port}"


def warn_if_simulated(settings: Settings) -> None:
    """At start-up of `creditq web|worker`: without TWILIO_API_BASE nothing reaches Twilio; say so plainly.

    `creditq dev` and the tests set TWILIO_API_BASE to their simulator, so they stay quiet.
    """
    if settings.twilio_api_base is None:
        log.warning("TWILIO_API_BASE is not set: messages go to the Twilio simulator at %s, not to Twilio. "
                    "Set TWILIO_API_BASE=https://api.twilio.com to send real messages.", simulator_url(settings))


def _retry_after(response: Response | None) -> float | None:
    """Retry-After in seconds: a number of seconds or an HTTP date."""
    raw = (response.headers or {}).get("Retry-After") if response is not None else None
    if not raw:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        return max(email.utils.parsedate_to_datetime(raw).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


def _int_or_none(raw) -> int | None:
    try:
        return int(raw)
    except (TypeError, ValueError):
        return None
