"""The chat page (`GET /`) in a real headless browser: Debian's chromium and chromedriver through
selenium. `.ci/run` installs them; the tests skip, saying why, only where they cannot be found."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is not installed (dev extra)"
)

CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="no headless browser: install Debian's chromium and chromium-driver "
    "(`apt-get install chromium chromium-driver`; .ci/run does)",
)


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument("--window-size=1200,800")
    options.binary_location = CHROMIUM  # type: ignore[assignment]
    # an explicit driver: selenium never tries to download one
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def wait_for(driver, condition, timeout: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def test_the_page_loads_and_chats_with_the_conditioning_shown(
    browser, server, client, tmp_path: Path
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(server.url + "/")
    wait_for(browser, lambda d: "ready" in d.find_element(By.ID, "status").text)
    models = Select(browser.find_element(By.ID, "model"))
    assert [o.get_attribute("value") for o in models.options] == ["ft", "lora", "cvae"]
    assert not browser.find_element(By.ID, "persona").get_attribute("value")

    # a finetune model with a persona: the reply is the API's reply to the same request
    models.select_by_value("ft")
    browser.find_element(By.ID, "persona").send_keys("i like hiking .\ni work in a bank .")
    browser.find_element(By.CSS_SELECTOR, "details summary").click()  # the decoding settings
    browser.find_element(By.ID, "seed").send_keys("7")
    browser.find_element(By.ID, "message").send_keys("hello , how are you ?")
    browser.find_element(By.ID, "send").click()
    reply = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".msg.assistant"))[0]
    expected = client.chat.completions.create(
        model="ft",
        messages=[{"role": "user", "content": "hello , how are you ?"}],
        temperature=0,
        seed=7,
        extra_body={"persona": ["i like hiking .", "i work in a bank ."]},
    )
    note = reply.find_element(By.CSS_SELECTOR, ".conditioning").text
    text = reply.text.removesuffix(note).strip()
    assert text == (expected.choices[0].message.content.strip() or "(empty reply)")
    assert (
        "ft (finetune)" in note and "persona (request): i like hiking . i work in a bank ." in note
    )
    assert "seed 7" in note

    # cvae: the declared attributes appear as choices, and the chosen targets are echoed
    browser.find_element(By.ID, "reset").click()
    models.select_by_value("cvae")
    wait_for(browser, lambda d: d.find_element(By.ID, "attributes-section").is_displayed())
    Select(browser.find_element(By.ID, "attr-attitude")).select_by_value("optimistic")
    browser.find_element(By.ID, "message").send_keys("what do you think of rain ?")
    browser.find_element(By.ID, "send").click()
    reply = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".msg.assistant"))[0]
    assert "attributes: attitude=optimistic" in reply.text

    # lora: the user field lists the adapters' users; the reply says which adapter served it
    browser.find_element(By.ID, "reset").click()
    models.select_by_value("lora")
    user = browser.find_element(By.ID, "user")
    assert user.is_displayed()
    users = [
        o.get_attribute("value") for o in browser.find_elements(By.CSS_SELECTOR, "#users option")
    ]
    assert users, "the lora model's users are offered"
    user.send_keys(users[0])
    browser.find_element(By.ID, "message").send_keys("hi !")
    browser.find_element(By.ID, "send").click()
    reply = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".msg.assistant"))[0]
    assert f"user {users[0]}, adapter" in reply.text

    shot = tmp_path / "chat.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 5_000


def test_a_bad_request_is_shown_and_the_conversation_goes_on(browser, server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get(server.url + "/")
    wait_for(browser, lambda d: "ready" in d.find_element(By.ID, "status").text)
    Select(browser.find_element(By.ID, "model")).select_by_value("ft")
    browser.find_element(By.CSS_SELECTOR, "details summary").click()
    browser.find_element(By.ID, "max-tokens").send_keys("100000")  # above the model's positions
    browser.find_element(By.ID, "message").send_keys("hello ?")
    browser.find_element(By.ID, "send").click()
    error = wait_for(
        browser,
        lambda d: d.find_element(By.ID, "error") if d.find_element(By.ID, "error").text else None,
    )
    assert "max_tokens" in error.text
    assert not browser.find_elements(By.CSS_SELECTOR, ".msg.assistant")
    browser.find_element(By.ID, "max-tokens").clear()
    browser.find_element(By.ID, "message").send_keys("hello again ?")
    browser.find_element(By.ID, "send").click()
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".msg.assistant"))
    assert not browser.find_element(By.ID, "error").is_displayed()
