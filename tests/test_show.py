"""gradcli show in a real browser: headless Chromium (Debian's), driven by Playwright.

The page is opened from disk, as a student would; every step of the worked examples is
walked with the keyboard and what the page shows is compared with ``gradcli grad --format
json``.  Every request the page makes is recorded (and any that leaves the file aborted).

    python tests/test_show.py docs/show.png    # re-takes the README's screenshot
"""
import json
import os
import re
import sys
from pathlib import Path

import pytest

from conftest import cli

CHROMIUM = os.environ.get("GRADCLI_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

EXAMPLES = {
    "seed": ("(x+y)*max(y,z)", ["x=1", "y=2", "z=0"]),
    "mul": ("(x+y)*z", ["x=1", "y=3", "z=-3"]),
    "poly": ("x**2+2*x+1", ["x=[2,3]"]),
}


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


class Opened:
    """A page opened from disk, with every request it made and every script error."""

    def __init__(self, browser, path, fragment=""):
        self.context = browser.new_context(viewport={"width": 1300, "height": 760})
        self.requests, self.aborted, self.errors = [], [], []
        self.url = Path(path).resolve().as_uri()

        def route(r):  # anything but the page's own file is refused (and remembered)
            if r.request.url.split("#")[0] == self.url:
                r.continue_()
            else:
                self.aborted.append(r.request.url)
                r.abort()
        self.context.route("**/*", route)
        self.page = self.context.new_page()
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.load(fragment)

    def load(self, fragment=""):
        """Open the page afresh (a new document, not a jump within it)."""
        if self.page.url != "about:blank":
            self.page.goto("about:blank")
        self.page.goto(self.url + fragment)
        self.page.wait_for_selector("html[data-ready]")

    def text(self, selector):
        return self.page.inner_text(selector)

    def counter(self):
        m = re.fullmatch(r"step (\d+) / (\d+)", self.text("#counter"))
        return int(m.group(1)), int(m.group(2))

    def box(self, node_id):
        return self.page.locator(f'g.node:has(> title:text-is("n{node_id}"))')

    def close(self):
        self.context.close()


@pytest.fixture
def opened(browser):
    pages = []

    def open_(path, fragment=""):
        o = Opened(browser, path, fragment)
        pages.append(o)
        return o
    yield open_
    for o in pages:
        assert not o.errors, o.errors
        o.close()


_MADE = {}


def make(tmp_path, key):
    """The page of a worked example (made once per run) and its ``grad --format json``."""
    if key not in _MADE:
        expr, args = EXAMPLES[key]
        path = tmp_path / f"{key}.html"
        r = cli("show", expr, *args, "-o", path)
        assert r.code == 0, r.err
        g = cli("grad", "--format", "json", expr, *args)
        assert g.code == 0, g.err
        _MADE[key] = path, json.loads(g.out)
    return _MADE[key]


# ---------------------------------------------------------------- reading numbers back

def number(text):
    """A number or an array as the page prints it ("6", "0.333333", "[6, 8]")."""
    return json.loads(text.replace("nan", "NaN").replace("inf", "Infinity"))


def close(got, want):
    import numpy as np

    np.testing.assert_allclose(np.asarray(got, float), np.asarray(want, float), rtol=1e-5,
                               atol=1e-12)


def label_of(node):
    return node["name"] or node["text"]


def forward_value(text, node):
    """The value a forward step says node has computed."""
    if node["op"] == "var":
        m = re.fullmatch(rf"{re.escape(node['name'])} = (.+) \(an input\)\.", text)
    else:
        m = re.fullmatch(r".* = (.+)\.", text)
    assert m, text
    return number(m.group(1))


def backward_gradient(text, node, output):
    """The gradient a backward step says node has (its upstream, or its total)."""
    first = text.splitlines()[0]
    if node["op"] == "var":
        m = re.fullmatch(rf"{re.escape(node['name'])}: all its gradient has arrived: .*, "
                         rf"so ∂{output}/∂{re.escape(node['name'])} = (.+)\.", first)
        assert m, first
        return number(m.group(1))
    m = re.fullmatch(rf"{re.escape(label_of(node))}: upstream (.+) arrives\.", first)
    assert m, first
    up = re.sub(r" \(start.*\)$", "", m.group(1))
    return number(up.rsplit(" = ", 1)[-1])


def check_products(text):
    """Every scalar ``→ y: 3 × 1 = 3`` line: downstream = upstream × local."""
    for a, b, c in re.findall(r"→ [^:]+: (\S+) × (\S+) = (\S+)", text):
        close(number(c), number(a) * number(b))


# ---------------------------------------------------------------- the walk

@pytest.mark.parametrize("key", list(EXAMPLES))
def test_every_step_shows_the_numbers_of_grad_json(tmp_path, opened, key):
    path, want = make(tmp_path, key)
    o = opened(path)
    texts = [o.text("#step")]
    first, last = o.counter()
    assert first == 0
    for s in range(1, last + 1):
        o.page.keyboard.press("ArrowRight")
        assert o.counter() == (s, last)
        texts.append(o.text("#step"))
    o.page.keyboard.press("ArrowRight")  # past the end: stays
    assert o.counter() == (last, last)

    nodes = [n for n in want["nodes"] if n["op"] != "const"]
    forward = texts[1:1 + len(nodes)]
    for text, node in zip(forward, nodes):
        close(forward_value(text, node), node["value"])
    assert texts[1 + len(nodes)].startswith(f"Forward pass done: {want['output']} = ")

    back = [n for n in reversed(nodes) if n["grad"] is not None]
    backward = texts[2 + len(nodes):-1]
    assert len(backward) == len(back)
    for text, node in zip(backward, back):
        close(backward_gradient(text, node, want["output"]), node["grad"])
        check_products(text)
    end = texts[-1]
    for name, g in want["gradients"].items():
        m = re.search(rf"∂{want['output']}/∂{name} = (\[[^\]]*\]|[^,]+?)(?:,|\.$)", end)
        assert m, end
        close(number(m.group(1)), g)


@pytest.mark.parametrize("key", list(EXAMPLES))
def test_clicked_nodes_show_value_and_gradient_in_full(tmp_path, opened, key):
    path, want = make(tmp_path, key)
    o = opened(path, "#step=999")  # past the end: the last step
    assert o.counter()[0] == o.counter()[1]
    for node in want["nodes"]:
        if node["op"] == "const":
            continue
        o.box(node["id"]).click()
        title = o.text("#detail h2")
        assert title.startswith(label_of(node))
        value = o.page.locator("#detail-value")
        if node["shape"]:
            cells = [float(c) for c in value.locator("td").all_inner_texts()]
            assert cells == pytest.approx(node["value"], rel=1e-15)
        else:
            assert float(value.inner_text()) == pytest.approx(node["value"], rel=1e-15)
        if node["grad"] is not None:
            grad = o.page.locator("#detail-grad")
            got = ([float(c) for c in grad.locator("td").all_inner_texts()] if node["shape"]
                   else float(grad.inner_text()))
            assert got == pytest.approx(node["grad"], rel=1e-15)
    # an op shows its derivative rule; an input its chain-rule line from grad --explain
    if key == "seed":
        o.box(4).click()
        rule = o.text("#detail")
        assert "∂max(y,z)/∂y = 1 if y > z, 1/2 if y = z, else 0" in rule
        assert "because y > z" in rule
        o.box(1).click()
        assert o.text("#detail-explain").splitlines()[0].endswith("= 2·1 + 3·1 = 5")


def test_a_fan_out_sum_grows_as_its_parts_arrive(tmp_path, opened):
    path, _ = make(tmp_path, "seed")
    o = opened(path, "#step=8")  # f has sent; y has nothing yet
    o.box(1).click()
    assert o.text("#detail-grad") == "not arrived yet"
    o.page.keyboard.press("ArrowRight")  # max(y,z) sends 3 to y
    assert o.text("#detail-grad") == "so far: 3"
    assert "recv" in o.box(1).get_attribute("class")
    o.page.keyboard.press("ArrowRight")  # z's total
    o.page.keyboard.press("ArrowRight")  # x+y sends 2 to y
    assert o.text("#detail-grad") == "so far: 3 (via max(y,z)) + 2 (via x+y) = 5"
    o.page.keyboard.press("ArrowRight")  # y: complete
    assert o.text("#detail-grad") == "5"
    assert "current" in o.box(1).get_attribute("class")


def test_values_appear_only_when_computed(tmp_path, opened):
    path, _ = make(tmp_path, "seed")
    o = opened(path)
    page = o.page

    def visible(loc):
        return loc.evaluate("e => getComputedStyle(e).visibility") == "visible"

    out_value = o.box(5).locator("text.v")
    grads = page.locator("g.node text.g")
    back = page.locator('g.edge[data-k^="b:"]')
    fwd_labels = page.locator('g.edge[data-k^="f:"] text')
    assert all("pending" in o.box(i).get_attribute("class") for i in range(6))
    assert not visible(out_value) and not any(visible(grads.nth(k)) for k in range(6))
    assert not any(visible(back.nth(k)) for k in range(back.count()))
    assert not any(visible(fwd_labels.nth(k)) for k in range(fwd_labels.count()))
    page.evaluate("gradcliShow.go(6)")  # f computed: its value shows, no gradient yet
    assert visible(out_value) and "current" in o.box(5).get_attribute("class")
    assert all(visible(fwd_labels.nth(k)) for k in range(fwd_labels.count()))
    assert not any(visible(back.nth(k)) for k in range(back.count()))
    page.evaluate("gradcliShow.go(8)")  # f sends along its two backward edges
    lit = page.locator('g.edge.lit[data-k^="b:"]')
    assert lit.count() == 2 and all(visible(lit.nth(k)) for k in range(2))
    assert page.locator("g.edge.now").count() == 2
    page.evaluate("gradcliShow.go(14)")
    assert all(visible(grads.nth(k)) for k in range(6))
    assert all(visible(back.nth(k)) for k in range(back.count()))


# ---------------------------------------------------------------- #step=N and the controls

def test_step_fragment_opens_that_step_and_follows_the_walk(tmp_path, opened):
    path, _ = make(tmp_path, "seed")
    walk = opened(path)
    texts = []
    for s in range(15):
        walk.page.evaluate(f"gradcliShow.go({s})")
        texts.append(walk.text("#step"))
    o = walk
    for n in (0, 3, 9, 14):
        o.load(f"#step={n}")
        assert o.counter() == (n, 14)
        assert o.text("#step") == texts[n]
        assert o.page.locator("#slider").input_value() == str(n)
    o.load("#step=9")
    o.page.keyboard.press("ArrowLeft")
    assert o.page.evaluate("location.hash") == "#step=8"
    o.page.evaluate("location.hash = '#step=3'")
    o.page.wait_for_function("gradcliShow.current() === 3")
    assert o.text("#step") == texts[3]


def test_buttons_slider_keys_and_play(tmp_path, opened):
    path, _ = make(tmp_path, "seed")
    o = opened(path)
    page = o.page
    page.click("#next")
    page.click("#next")
    assert o.counter()[0] == 2
    page.click("#prev")
    assert o.counter()[0] == 1
    page.click("#last")
    assert o.counter()[0] == 14
    page.click("#first")
    assert o.counter()[0] == 0
    page.keyboard.press("End")
    assert o.counter()[0] == 14
    page.keyboard.press("Home")
    assert o.counter()[0] == 0
    page.locator("#slider").fill("7")
    assert o.counter()[0] == 7 and o.text("#step").startswith("Forward pass done")
    page.click("#play")
    page.wait_for_function("gradcliShow.current() >= 8", timeout=5000)
    assert "pause" in o.text("#play")
    page.click("#play")
    stopped = o.counter()[0]
    page.wait_for_timeout(1200)
    assert o.counter()[0] == stopped and "play" in o.text("#play")


# ---------------------------------------------------------------- no network, big pages

def test_the_page_makes_no_network_request(tmp_path, opened):
    path, _ = make(tmp_path, "poly")
    o = opened(path)
    o.page.evaluate("gradcliShow.go(gradcliShow.steps - 1)")
    o.box(0).click()
    assert o.aborted == []
    assert {u.split("#")[0] for u in o.requests} == {o.url}


def test_a_request_would_be_seen(tmp_path, opened):
    """The network check can fail: a page that fetches is caught (and refused)."""
    path, _ = make(tmp_path, "seed")
    text = path.read_text(encoding="utf-8").replace(
        "</body>", '<img src="http://192.0.2.1/track.png"></body>')
    leaky = tmp_path / "leaky.html"
    leaky.write_text(text, encoding="utf-8")
    o = opened(leaky)
    o.page.wait_for_timeout(200)
    assert o.aborted == ["http://192.0.2.1/track.png"]
    o.errors.clear()  # the refused image logs a console error; that is the point


def test_a_thousand_node_page_opens_under_two_seconds_and_steps_at_once(tmp_path, opened):
    from test_show_page import thousand_nodes

    path = tmp_path / "big.html"
    r = cli("show", "-f", "-", "x=0.3", "y=0.7", "-o", path, input=thousand_nodes())
    assert r.code == 0, r.err
    assert "--max-nodes" in r.err  # collapsed as dot collapses, and said so
    o = opened(path)
    import gradcli

    res = gradcli.grad(thousand_nodes(), x=0.3, y=0.7)
    assert len(res.order) >= 1000
    drawn = sum(res.graph.nodes[i].op.name != "const" for i in res.order)
    assert o.page.evaluate("gradcliShow.steps") == 2 * drawn + 3  # each forward and back
    # from the start of loading to the first step drawn, measured by the page itself; the
    # better of two openings, so one stall of a busy machine does not decide it
    opened_ms = o.page.evaluate("gradcliShow.readyAt")
    if opened_ms >= 2000:
        o.page.reload()
        o.page.wait_for_selector("html[data-ready]")
        opened_ms = min(opened_ms, o.page.evaluate("gradcliShow.readyAt"))
    assert opened_ms < 2000, f"opened in {opened_ms:.0f} ms"
    per_step = o.page.evaluate("""() => {
        const t = performance.now();
        for (let k = 0; k < 100; k++) gradcliShow.go(gradcliShow.steps - 1 - k);
        return (performance.now() - t) / 100; }""")
    assert per_step < 50, f"{per_step:.1f} ms per step"
    before = o.counter()[0]
    for _ in range(5):
        o.page.keyboard.press("ArrowLeft")
    assert o.counter()[0] == before - 5
    assert o.aborted == []


# ---------------------------------------------------------------- arrays, the check page

def test_a_matrix_is_a_heat_map_with_numbers_on_hover(tmp_path, opened):
    path = tmp_path / "layer.html"
    W = [[1.0, -2.0, 0.5], [3.0, 0.25, -1.0]]
    r = cli("show", "f = sum(tanh(W @ x + b))", f"W={json.dumps(W)}", "x=[0.5,-1,2]",
            "b=[0.1,0.2]", "-o", path)
    assert r.code == 0, r.err
    o = opened(path, "#step=999")
    o.box(0).click()
    cells = o.page.locator("#detail-value table.heat td")
    assert cells.count() == 6
    titles = cells.evaluate_all("tds => tds.map(td => td.title)")
    assert titles[1] == "[0, 1] = -2" and titles[3] == "[1, 0] = 3"
    colours = cells.evaluate_all("tds => tds.map(td => td.style.background)")
    assert colours[3] == "rgb(192, 57, 43)"  # the largest magnitude: full red
    assert "36, 113, 163" in colours[1]      # negative: blue
    cells.nth(1).hover()
    assert o.text("#detail-value .readout") == "[0, 1] = -2"


def test_check_page_in_the_browser(tmp_path, opened):
    import gradcli
    from gradcli.render import html

    g = gradcli.compile("relu(x)*y")
    b = {"x": 0.0, "y": 2.0}
    path = tmp_path / "check.html"
    path.write_text(html.check_page(gradcli.check(g, b), b), encoding="utf-8")
    o = opened(path)
    assert "kink" in o.box(1).get_attribute("class")
    o.box(1).click()
    assert "one-sided slopes 0 (left) and 2 (right)" in o.text("#detail")
    assert o.text("#notes").startswith("PASS")


# ---------------------------------------------------------------- the README's screenshot

def screenshot(browser, out, tmp_path):
    path, _ = make(tmp_path, "seed")
    o = Opened(browser, path, "#step=11")
    o.box(1).click()
    o.page.screenshot(path=str(out))
    errors = o.errors
    o.close()
    return errors


def test_screenshot_of_the_seed_example(tmp_path, browser):
    out = tmp_path / "show.png"
    assert screenshot(browser, out, tmp_path) == []
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1300, 760)
    assert (Path(__file__).parent.parent / "docs" / "show.png").exists()


if __name__ == "__main__":
    import tempfile

    from playwright.sync_api import sync_playwright

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/show.png")
    with sync_playwright() as p, tempfile.TemporaryDirectory() as tmp:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        problems = screenshot(b, target, Path(tmp))
        b.close()
    print(f"wrote {target}" + (f" (page errors: {problems})" if problems else ""))


@pytest.mark.parametrize("args", [
    ["2*3"],                                   # no inputs: nothing to differentiate
    ["x", "x=2"],                              # the output is the input itself
    ["sum(x)", "x=[[1,2],[3,4]]"],             # a matrix input, a reduction
    ["a = x*y; b = a + 1; c = b*2", "x=1", "y=2", "--output", "b"],
    ["x*y + z", "x=1", "y=2", "z=3", "--wrt", "x"],   # y and z get no gradient
    ["log(x)*y", "x=0", "y=nan"],              # -inf and nan shown as text
    ["MultiplyGate(x, y) * x", "x=2", "y=3", "--ops", "examples/gates.py"],
])
def test_edge_programs_walk_and_click_without_errors(tmp_path, opened, args):
    from conftest import ROOT

    args = [str(ROOT / a) if a.endswith(".py") else a for a in args]
    path = tmp_path / "edge.html"
    r = cli("show", *args, "-o", path)
    assert r.code == 0, r.err
    g = json.loads(cli("grad", "--format", "json", *args).out)
    o = opened(path)
    n = o.page.evaluate("gradcliShow.steps")
    boxes = o.page.locator("g.node[data-b]")
    for s in range(n):
        o.page.evaluate(f"gradcliShow.go({s})")
        if s in (0, n - 1):
            for k in range(boxes.count()):
                boxes.nth(k).click()
    end = o.text("#step")
    for name in g["gradients"]:
        assert f"∂{g['output']}/∂{name} = " in end
    if not g["gradients"]:
        assert "no inputs" in end
