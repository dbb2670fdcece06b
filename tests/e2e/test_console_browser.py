"""The console in a real browser (Debian's headless Chromium through Selenium) over the real processes: what a person
signed in sees and does, checked against the API's answers. Each test saves a screenshot of its page, at a phone's
size, under $CREDITQ_TEST_ARTIFACTS (default tests/artifacts/)."""

import os
import re
import time
from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.support.stack import ADMIN_KEY, ROOT, Stack

pytestmark = pytest.mark.e2e
OPERATOR = {"Authorization": f"Bearer {ADMIN_KEY}"}
ARTIFACTS = Path(os.environ.get("CREDITQ_TEST_ARTIFACTS", ROOT / "tests" / "artifacts"))
PHONE = (412, 915)  # CSS pixels of a common phone: every page must be usable at this size
WAIT_SECONDS = 30


@pytest.fixture(scope="module")
def stack(postgres_server, tmp_path_factory):
    env = {"CREDITQ_KEY_RATE_LIMIT": "0", "CREDITQ_PAYMENT_SWEEP_SECONDS": "1"}
    with Stack(postgres_server, tmp_path_factory.mktemp("stack"), database_name="e2e_console", env=env,
               worker_processes=1, worker_threads=4) as running:
        yield running


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={PHONE[0]},{PHONE[1]}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    yield driver
    driver.quit()


@pytest.fixture(autouse=True)
def screenshot(request, browser):
    """A fresh browser session for the test, and a picture of where it ended."""
    browser.delete_all_cookies()
    yield
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / f"{request.node.name}.png"))


def api(stack, method: str, path: str, headers: dict, **kwargs) -> requests.Response:
    return requests.request(method, f"{stack.url}{path}", headers=headers, timeout=30, **kwargs)


def new_account(stack, name: str) -> tuple[str, str]:
    created = api(stack, "POST", "/v1/accounts", OPERATOR, json={
        "name": name, "timezone": "America/New_York",
        "plan": {"monthly_credits": "1000", "cycle": "monthly", "rollover": "none"}})
    assert created.status_code == 201, created.text
    return created.json()["id"], created.json()["api_key"]


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def sign_in(browser, stack, key: str) -> None:
    browser.get(f"{stack.url}/")
    browser.find_element(By.ID, "key").send_keys(key)
    browser.find_element(By.CSS_SELECTOR, "form[action='/sign-in'] button").click()
    wait_for(browser, lambda b: "/accounts/" in b.current_url or "/operator/" in b.current_url, "the home page")


def wait_for(browser, condition, what: str):
    return WebDriverWait(browser, WAIT_SECONDS).until(condition, message=f"{what} not seen")


def text_of(browser, element_id: str) -> str:
    return browser.find_element(By.ID, element_id).text.strip()


def test_an_owner_sees_the_balance_and_the_expiring_figure_the_api_answers(stack, browser):
    # given an account with its plan's credits (expiring at the month's end) and purchased ones (never expiring)
    account_id, key = new_account(stack, "Grace Church")
    granted = api(stack, "POST", f"/v1/accounts/{account_id}/grants", OPERATOR,
                  json={"credits": "250.5", "kind": "purchase"})
    assert granted.status_code == 201, granted.text
    answer = api(stack, "GET", f"/v1/accounts/{account_id}/balance", bearer(key)).json()

    # when its owner signs in to the console
    sign_in(browser, stack, key)

    # then the dashboard shows the API's figures
    assert browser.current_url == f"{stack.url}/accounts/{account_id}"
    assert text_of(browser, "balance") == answer["balance"] == "1250.5"
    assert text_of(browser, "expiring") == answer["expiring_end_of_month"] == "1000"
    assert text_of(browser, "kind-plan") == "1000" and text_of(browser, "kind-purchase") == "250.5"


def test_the_ticker_goes_from_one_to_two_segments_at_161_gsm_characters_and_an_emoji_makes_it_ucs2(stack, browser):
    # given an owner on the compose page
    account_id, key = new_account(stack, "Ticker")
    sign_in(browser, stack, key)
    browser.get(f"{stack.url}/accounts/{account_id}/compose")
    body = browser.find_element(By.ID, "body")

    # when 160 GSM characters are typed, then one more
    body.send_keys("a" * 160)
    wait_for(browser, lambda b: text_of(b, "characters") == "160", "160 characters")
    one_segment = (text_of(browser, "segments"), text_of(browser, "encoding"))
    body.send_keys("a")
    wait_for(browser, lambda b: text_of(b, "characters") == "161", "161 characters")
    two_segments = (text_of(browser, "segments"), text_of(browser, "encoding"), text_of(browser, "credits"))

    # and an emoji is added (ChromeDriver types only the Basic Multilingual Plane: the page gets it as a paste would)
    browser.execute_script("arguments[0].value += '\\u{1F600}'; arguments[0].dispatchEvent(new Event('input', {bubbles: true}))", body)
    wait_for(browser, lambda b: text_of(b, "encoding") == "UCS-2", "UCS-2")

    # then the ticker went 1 -> 2 segments, and says which character forced UCS-2 (the estimate the API gives)
    assert one_segment == ("1", "GSM-7")
    assert two_segments == ("2", "GSM-7", "2")
    estimate = api(stack, "POST", "/v1/estimate", bearer(key), json={"body": "a" * 161 + "\U0001F600"}).json()
    assert text_of(browser, "segments") == str(estimate["segments"]) == "3"
    assert "U+1F600 GRINNING FACE" in text_of(browser, "why")


def test_giving_a_user_more_than_the_cap_shows_the_maximum_as_the_api_says_it(stack, browser):
    # given an account with 1000 credits and a user with none
    account_id, key = new_account(stack, "Capped")
    user = api(stack, "POST", f"/v1/accounts/{account_id}/users", bearer(key),
               json={"name": "Ada", "email": "ada@example.com", "role": "user", "monthly_credits": "0"}).json()
    refusal = api(stack, "PATCH", f"/v1/accounts/{account_id}/users/{user['id']}", bearer(key),
                  json={"total_credits": "5000"})
    assert refusal.status_code == 422

    # when the owner gives her 5000 on the users page
    sign_in(browser, stack, key)
    browser.get(f"{stack.url}/accounts/{account_id}/users")
    assert text_of(browser, "company-credits") == "1000"
    total = browser.find_element(By.CSS_SELECTOR, f"#user-{user['id']} input[name='total_credits']")
    total.clear()
    total.send_keys("5000")
    browser.find_element(By.CSS_SELECTOR, f"#user-{user['id']} form button[type='submit']").click()
    wait_for(browser, lambda b: b.find_elements(By.ID, "error"), "the error")

    # then the error names the maximum, exactly as the API's 422 does, and nothing moved
    assert text_of(browser, "error") == refusal.json()["detail"]
    assert "at most 1000" in text_of(browser, "error")
    users = api(stack, "GET", f"/v1/accounts/{account_id}/users", bearer(key)).json()["data"]
    assert [u["total_credits"] for u in users if u["id"] == user["id"]] == ["0"]


def test_buying_100_credits_through_the_stripe_stand_in_raises_the_balance(stack, browser):
    # given an owner who saves a card on the Stripe stand-in's hosted page, from the billing page
    account_id, key = new_account(stack, "Buyer")
    sign_in(browser, stack, key)
    browser.get(f"{stack.url}/accounts/{account_id}/billing")
    browser.find_element(By.ID, "update-card").click()
    wait_for(browser, lambda b: b.current_url.startswith(stack.stripe_url), "the stand-in's page")
    Select(browser.find_element(By.NAME, "payment_method")).select_by_value("pm_card_visa")
    browser.find_element(By.CSS_SELECTOR, "button[type='submit']").click()
    wait_for(browser, lambda b: b.current_url == f"{stack.url}/accounts/{account_id}/billing", "the billing page")

    def card_on_file(b):
        if "ending" in text_of(b, "card"):
            return True
        b.refresh()  # the card arrives with the stand-in's webhook
        return False

    wait_for(browser, card_on_file, "the saved card")
    before = api(stack, "GET", f"/v1/accounts/{account_id}/balance", bearer(key)).json()["balance"]

    # when the owner buys the 100-credit bucket
    Select(browser.find_element(By.ID, "bucket")).select_by_value("100")
    browser.find_element(By.ID, "buy").click()
    wait_for(browser, lambda b: b.find_elements(By.ID, "notice"), "the purchase's outcome")
    notice = text_of(browser, "notice")

    # then it is paid, and the balance on the dashboard rose by 100, as the API says too
    browser.get(f"{stack.url}/accounts/{account_id}")
    assert notice == "Paid: the credits are in."
    assert (before, text_of(browser, "balance")) == ("1000", "1100")
    assert api(stack, "GET", f"/v1/accounts/{account_id}/balance", bearer(key)).json()["balance"] == "1100"


def test_a_user_key_sees_only_its_own_wallet(stack, browser):
    # given a user given 40 of the account's 1000 credits, with a key of its own, and another account
    account_id, key = new_account(stack, "Team")
    other_id, _ = new_account(stack, "Elsewhere")
    user = api(stack, "POST", f"/v1/accounts/{account_id}/users", bearer(key),
               json={"name": "Lin", "email": "lin@example.com", "role": "user", "monthly_credits": "0"}).json()
    moved = api(stack, "PATCH", f"/v1/accounts/{account_id}/users/{user['id']}", bearer(key),
                json={"total_credits": "40"})
    assert moved.status_code == 200, moved.text
    user_key = api(stack, "POST", f"/v1/accounts/{account_id}/api-keys", bearer(key),
                   json={"name": "lin", "user_id": user["id"]}).json()["key"]

    # when the user signs in
    sign_in(browser, stack, user_key)

    # then the dashboard is the user's own wallet, not the account's
    assert text_of(browser, "balance") == "40"
    assert "Lin" in browser.find_element(By.CSS_SELECTOR, "main .muted").text
    links = [link.text for link in browser.find_elements(By.CSS_SELECTOR, "nav a")]
    assert "Users" not in links and "Billing" not in links and "Dashboard" in links
    # and the pages of its owner, and another account, are refused
    browser.get(f"{stack.url}/accounts/{account_id}/billing")
    assert "key may not" in text_of(browser, "error")
    browser.get(f"{stack.url}/accounts/{other_id}")
    assert text_of(browser, "error") == f"No account {other_id}."


def test_a_form_posted_without_the_csrf_token_is_refused(stack, browser):
    # given an owner on the users page
    account_id, key = new_account(stack, "Forged")
    sign_in(browser, stack, key)
    browser.get(f"{stack.url}/accounts/{account_id}/users")

    # when the add-user form is sent without its CSRF token (as a forged cross-site form would be)
    form = browser.find_element(By.CSS_SELECTOR, f"form[action='/accounts/{account_id}/users']")
    browser.execute_script("arguments[0].querySelector('input[name=csrf_token]').remove()", form)
    browser.find_element(By.ID, "new-name").send_keys("Mallory")
    browser.find_element(By.ID, "new-email").send_keys("mallory@example.com")
    form.find_element(By.CSS_SELECTOR, "button[type='submit']").click()
    wait_for(browser, lambda b: b.find_elements(By.ID, "error"), "the refusal")

    # then it is refused, and no user was made
    assert browser.find_element(By.TAG_NAME, "h1").text == "Forbidden"
    assert "did not come from this console" in text_of(browser, "error")
    users = api(stack, "GET", f"/v1/accounts/{account_id}/users", bearer(key)).json()["data"]
    assert [u for u in users if u["name"] == "Mallory"] == []


def test_a_session_ends_within_5_seconds_of_its_key_being_revoked(stack, browser):
    # given an owner signed in with a second account key, served by another web process than the one revoking
    account_id, key = new_account(stack, "Revoked")
    second = api(stack, "POST", f"/v1/accounts/{account_id}/api-keys", bearer(key), json={"name": "console"}).json()
    sign_in(browser, stack, second["key"])
    browser.get(f"{stack.url}/accounts/{account_id}/transactions")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Transactions"
    other_web = stack.start_web("web-revoker")

    # when the key is revoked, and 5 seconds pass
    revoked = requests.delete(f"{other_web}/v1/accounts/{account_id}/api-keys/{second['id']}", headers=bearer(key),
                              timeout=30)
    assert revoked.status_code == 204, revoked.text
    time.sleep(5)

    # then the next page is the sign-in form: the session is over
    browser.get(f"{stack.url}/accounts/{account_id}/transactions")
    assert browser.current_url == f"{stack.url}/sign-in"
    assert browser.find_element(By.ID, "key")
    assert re.search("Sign in", browser.find_element(By.TAG_NAME, "h1").text)


UNLABELLED = """
return [...document.querySelectorAll('input:not([type=hidden]), select, textarea, button')]
  .filter(control => !(control.labels && control.labels.length) && !control.getAttribute('aria-label')
                     && !(control.tagName === 'BUTTON' && control.textContent.trim()))
  .map(control => control.outerHTML.slice(0, 120));
"""


def test_every_control_of_every_page_has_a_label_and_no_page_is_wider_than_a_phone(stack, browser):
    # given an account with a user, signed in as its owner, then as the operator
    account_id, key = new_account(stack, "Labels")
    api(stack, "POST", f"/v1/accounts/{account_id}/users", bearer(key),
        json={"name": "Ada", "email": "ada@example.com", "role": "user", "monthly_credits": "0"})
    pages = {key: ["", "/compose", "/users", "/transactions", "/messages", "/campaigns", "/billing", "/expiring"],
             ADMIN_KEY: ["/operator/accounts", "/operator/month-end", "/operator/dunning"]}
    found, too_wide = {}, {}
    for signing_key, paths in pages.items():
        browser.delete_all_cookies()
        sign_in(browser, stack, signing_key)
        for path in paths:
            # when each page is opened on a phone-sized screen
            browser.get(f"{stack.url}/accounts/{account_id}{path}" if not path.startswith("/operator")
                        else f"{stack.url}{path}")
            found[path or "/dashboard"] = browser.execute_script(UNLABELLED)
            width = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
            if width[0] > width[1]:
                too_wide[path or "/dashboard"] = width

    # then every control is labelled, and only tables scroll sideways, inside their own box
    assert {path: controls for path, controls in found.items() if controls} == {}
    assert too_wide == {}
