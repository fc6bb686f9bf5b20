"""The patching explorer in Debian's chromium (Playwright, no browser download), against
the real app started once for this module on a free localhost port. Every request other
than to that server is aborted and recorded; the console must log no error. Screenshots
of each panel go to build/."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import pytest
import torch

from circuitlab.explore.compute import ModelChoice, ModelStore, model_choices
from circuitlab.prompts import CORRUPTIONS
from circuitlab.sweeps import head_by_position_sweep, head_sweep, residual_sweep
from tests import explorer_server

BUILD = Path(__file__).resolve().parent.parent / "build"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed and `make test` could not install "
                                "it (apt-get install chromium)")
TIMEOUT = 180_000  # ms, for one page action that waits on the model (generous: the machine is shared)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    # A pretrained choice whose weights are not here: the page must say so.
    missing = ModelChoice("gelu-2l:pretrained", "gelu-2l", "pretrained", "gelu-2l (pretrained, not cached)")
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    store = ModelStore([*model_choices(), missing])
    store.get("circuitlab-2l")  # loaded before the first page asks for it
    running = explorer_server.start(store)
    yield running
    running.stop()
    mp.undo()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


class Visitor:
    """One browser context: its page, console errors, and any request that left localhost."""

    def __init__(self, browser, app):
        self.context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        self.left, self.errors = [], []
        base = app.url

        def route(r):
            if r.request.url.startswith(base):
                r.continue_()
            else:
                self.left.append(r.request.url)
                r.abort()

        self.context.route("**/*", route)
        self.page = self.context.new_page()
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(base)
        self.page.wait_for_selector("#run")

    def fill(self, **fields):
        for elem, value in fields.items():
            box = self.page.locator(f"#{elem} textarea, #{elem} input").first
            box.fill(value)

    def load_case(self, key: str):
        """Click a tutorial example and wait until its values are in the four boxes.

        The button's answer comes back from the server after the click returns; typing or
        running before it lands races it (it overwrote a typed prompt in CI). Where the boxes
        already hold the example there is nothing to wait for, so no click is made."""
        case = CORRUPTIONS[key]
        want = {"clean": case.clean_prompt, "corrupt": case.corrupt_prompt,
                "clean-answer": case.clean_answer, "corrupt-answer": case.corrupt_answer}
        read = ("Object.fromEntries(Object.keys(want).map(k => [k, "
                "document.querySelector(`#${k} textarea, #${k} input`)?.value]))")
        if self.page.evaluate(f"want => {read}", want) == want:
            return
        self.page.click(f"#case-{key}")
        self.page.wait_for_function(f"want => JSON.stringify({read}) === JSON.stringify(want)", arg=want,
                                    timeout=TIMEOUT)

    def run(self):
        self.page.click("#run")

    def wait_exact(self):
        self.page.wait_for_selector("#status :text('Exact sweeps done')", timeout=TIMEOUT)

    def message(self, expected: str) -> str:
        """The page's error message, once it says `expected` (an earlier one may still show)."""
        self.page.locator("#message .explorer-error", has_text=expected).wait_for(timeout=TIMEOUT)
        return self.page.inner_text("#message")

    def csv_rows(self) -> list[dict]:
        with self.page.expect_download() as download:
            self.page.locator("#downloads a[download='patching_results.csv']").click()
        return list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))

    def close(self):
        assert self.errors == [], self.errors
        assert self.left == [], f"requests left localhost: {self.left}"
        self.context.close()


def _expected(store, case, direction="noising"):
    model = store.get("circuitlab-2l")
    clean, corrupt = model.to_tokens(case.clean_prompt), model.to_tokens(case.corrupt_prompt)
    base, source = (clean, corrupt) if direction == "noising" else (corrupt, clean)
    answers = torch.tensor([[model.to_single_token(case.clean_answer), model.to_single_token(case.corrupt_answer)]])
    return {"resid": residual_sweep(model, base, source, answers, progress_bar=False)[0],
            "heads": head_sweep(model, base, source, answers, progress_bar=False)[0],
            "head_pos": head_by_position_sweep(model, base, source, answers, progress_bar=False)[0]}


def _assert_csv_matches(rows, expected):
    exact = [r for r in rows if r["method"] == "exact"]
    assert len(exact) == sum(v.numel() for v in expected.values())
    for r in exact:
        index = [int(r[k]) for k in ("layer", "head", "position") if r[k] != ""]
        assert abs(float(r["logit_diff"]) - expected[r["sweep"]][tuple(index)].item()) < 1e-4, r
    assert {r["method"] for r in rows} == {"estimate", "exact"}


def _panel_shot(page, selector, name):
    BUILD.mkdir(exist_ok=True)
    page.locator(selector).first.screenshot(path=str(BUILD / f"explorer_{name}.png"))


def test_surname_example_heatmaps_downloads_attention_and_screenshots(app, browser):
    v = Visitor(browser, app)
    page = v.page
    v.load_case("surname")
    v.run()
    v.wait_exact()
    for kind in ("resid", "heads", "head_pos"):
        page.wait_for_selector(f"#plot-{kind} .js-plotly-plot", timeout=TIMEOUT)
        assert "Exact sweep" in page.inner_text(f"#plot-{kind}")
    assert page.locator("#alignment th.differs").count() == 1 and page.inner_text("#alignment th.differs") == "5"
    assert [page.locator("#alignment td.differs").nth(i).inner_text() for i in (0, 1)] == ["' Hart'", "' Carroll'"]
    assert "logit difference" in page.inner_text("#predictions")
    _assert_csv_matches(v.csv_rows(), _expected(app.store, CORRUPTIONS["surname"]))
    # Hover shows layer, position, token and value.
    drag = page.locator("#plot-resid .nsewdrag").first
    drag.scroll_into_view_if_needed()
    box = drag.bounding_box()
    for dx in (0.40, 5.5 / 12):  # plotly hovers on mouse movement
        page.mouse.move(box["x"] + box["width"] * dx, box["y"] + box["height"] * 0.25)
    page.wait_for_function("(document.querySelector('#plot-resid g.hovertext') || {}).textContent"
                           "?.includes('position 5')", timeout=10_000)
    hover = page.text_content("#plot-resid g.hovertext")
    assert "layer 0" in hover and "position 5, token ' Hart'" in hover and "logit difference: -12.3" in hover
    # The attention view draws inside its iframe, with no network.
    frame = page.frame_locator("#attention iframe")
    frame.locator("canvas").first.wait_for(timeout=TIMEOUT)
    assert frame.locator("text=Head Selector").count() >= 1
    assert page.locator("#attention iframe").bounding_box()["height"] > 520
    assert page.locator("#head-scores").inner_text().count("L1H") == 4
    # A link that reproduces the inputs.
    href = page.get_attribute("#share a", "href")
    assert "clean=Her+name+was+Alex+Hart" in href and "corrupt_answer=+Carroll" in href
    for selector, name in (("#model", "inputs"), ("#alignment", "tokens"), ("#predictions", "predictions"),
                           ("#plot-resid", "residual"), ("#plot-heads", "heads"), ("#plot-head_pos", "head_by_position"),
                           ("#attention", "attention"), ("#head-scores", "head_scores")):
        _panel_shot(page, selector, name)
    page.screenshot(path=str(BUILD / "explorer_page.png"), full_page=True)
    # Rescaling redraws without recomputing; the CSV follows the page's scale.
    page.click("#scale label:has-text('Normalised')")
    page.wait_for_selector("#plot-resid :text('Normalised')", timeout=TIMEOUT)
    rows = v.csv_rows()
    assert {r["scale"] for r in rows} == {"normalised"}
    v.close()


def test_the_share_link_restores_the_inputs(app, browser):
    v = Visitor(browser, app)
    case = CORRUPTIONS["second_name"]
    from urllib.parse import urlencode

    v.page.goto(app.url + "/?" + urlencode({"clean": case.clean_prompt, "corrupt": case.corrupt_prompt,
                                           "direction": "denoising"}))
    v.page.wait_for_function(f"document.querySelector('#corrupt textarea, #corrupt input')?.value === {case.corrupt_prompt!r}")
    assert v.page.locator("#direction input[value='denoising']").is_checked()
    v.close()


BAD = [
    (dict(clean=""), "The clean prompt is empty"),
    (dict(corrupt="Her name was Alex Carrollsonberg. Tomorrow at lunch time Alex"),
     "'Carrollsonberg' is 3 tokens"),
    (dict(**{"clean-answer": " Hartzenberg"}), "is 3 tokens (' Hart' | 'zen' | 'berg')"),
    (dict(clean="Alex " * 70), "the limit is 64 tokens"),
]


def test_each_bad_input_shows_its_message_and_the_page_keeps_working(app, browser):
    v = Visitor(browser, app)
    page = v.page
    for fields, expected in BAD:
        v.load_case("surname")
        v.fill(**fields)
        v.run()
        assert "Traceback" not in v.message(expected)
    # A model whose weights are missing.
    v.load_case("surname")
    page.locator("#model input").first.click()
    page.get_by_role("option", name="gelu-2l (pretrained, not cached)").click()
    v.run()
    text = v.message("not available here")
    assert "weights of gelu-2l are not available here" in text and "pick another model" in text
    _panel_shot(page, "#message", "error_message")
    # Over the time limit, and the long-prompt guard: the estimate, then a button.
    page.locator("#model input").first.click()
    page.get_by_role("option", name=next(c.label for c in app.store.choices.values() if c.key == "circuitlab-2l")).click()
    app.limits.time_limit_s = 0.0
    try:
        v.run()
        page.wait_for_selector("#status :text('over this server')", timeout=TIMEOUT)
        assert "limit of 0 s" in page.inner_text("#status")
    finally:
        app.limits.time_limit_s = 300.0
    app.limits.auto_exact_s = 0.0
    try:
        v.run()
        page.wait_for_selector("#run-exact:visible", timeout=TIMEOUT)
        assert "about" in page.inner_text("#run-exact")
        assert "Attribution estimate" in page.inner_text("#plot-resid")
        _panel_shot(page, "#run-exact", "long_prompt_guard")
        page.click("#run-exact")
        v.wait_exact()
    finally:
        app.limits.auto_exact_s = 20.0
    assert page.inner_text("#message").strip() == ""
    _assert_csv_matches(v.csv_rows(), _expected(app.store, CORRUPTIONS["surname"]))
    v.close()


def test_two_visitors_at_once_get_their_own_numbers(app, browser):
    a, b = Visitor(browser, app), Visitor(browser, app)
    a.load_case("surname")
    b.load_case("first_name")
    b.page.click("#direction label:has-text('Clean into corrupt')")
    a.run()
    b.run()
    a.wait_exact()
    b.wait_exact()
    _assert_csv_matches(a.csv_rows(), _expected(app.store, CORRUPTIONS["surname"]))
    _assert_csv_matches(b.csv_rows(), _expected(app.store, CORRUPTIONS["first_name"], "denoising"))
    a.close()
    b.close()
    model = app.store.get("circuitlab-2l")
    assert not any(getattr(m, "_forward_hooks", None) for n, m in model.named_modules() if "hook_" in n)
