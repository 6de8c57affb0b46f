"""<storage-usage-bar>: bands, text, decimal units and attribute reflection, in Chromium."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.services import ROOT

pytestmark = pytest.mark.browser

COMPONENT = ROOT / "gateway" / "static" / "storage-usage-bar.js"
PAGE = """<!doctype html><html><body style="font-family: sans-serif; width: 420px">
<storage-usage-bar id="p10" used="100" limit="1000"></storage-usage-bar><br>
<storage-usage-bar id="p75" used="380000000" limit="500000000"></storage-usage-bar><br>
<storage-usage-bar id="p95" used="95000000" limit="100000000"></storage-usage-bar><br>
<storage-usage-bar id="unl" used="14300000000"></storage-usage-bar><br>
<storage-usage-bar id="empty-limit" used="5" limit=""></storage-usage-bar><br>
<storage-usage-bar id="over" used="1500" limit="1000"></storage-usage-bar>
</body></html>"""


async def shown(page: Any, element_id: str) -> dict[str, Any]:
    """What the component renders, read from its shadow DOM."""
    result: dict[str, Any] = await page.evaluate(
        """(id) => {
            const host = document.getElementById(id);
            const root = host.shadowRoot;
            const fill = root.querySelector('[part~="fill"]');
            const track = root.querySelector('[part~="track"]');
            return {
                band: host.dataset.band,
                fillBand: fill.dataset.band,
                percent: host.dataset.percent ?? null,
                overLimit: host.dataset.overLimit,
                used: root.querySelector('[part~="used"]').textContent,
                quota: root.querySelector('[part~="quota"]').textContent,
                message: root.querySelector('[part~="message"]').textContent,
                width: fill.style.width,
                barShown: !track.hidden && track.getBoundingClientRect().height > 0,
                fillColor: getComputedStyle(fill).backgroundColor,
                ariaNow: track.getAttribute("aria-valuenow"),
            };
        }""",
        element_id,
    )
    return result


@pytest.fixture
async def bars(context: Any) -> Any:
    page = await context.new_page()
    await page.set_content(PAGE)
    await page.add_script_tag(path=str(COMPONENT))
    await page.wait_for_function("customElements.get('storage-usage-bar') !== undefined")
    return page


GREEN, YELLOW, RED = "rgb(22, 163, 74)", "rgb(234, 179, 8)", "rgb(220, 38, 38)"


async def test_three_bands_and_unlimited(bars: Any, output_dir: Path) -> None:
    p10 = await shown(bars, "p10")
    assert p10 | {"fillColor": None} == {
        "band": "green",
        "fillBand": "green",
        "percent": "10",
        "overLimit": "false",
        "used": "100 B used",
        "quota": "10% of 1 kB",
        "message": "",
        "width": "10%",
        "barShown": True,
        "fillColor": None,
        "ariaNow": "10",
    }
    assert p10["fillColor"] == GREEN

    p75 = await shown(bars, "p75")
    assert (p75["band"], p75["fillBand"], p75["percent"]) == ("yellow", "yellow", "76")
    assert (p75["used"], p75["quota"]) == ("380 MB used", "76% of 500 MB")
    assert p75["message"] == "Running low on storage."
    assert p75["fillColor"] == YELLOW and p75["width"] == "76%"

    p95 = await shown(bars, "p95")
    assert (p95["band"], p95["fillBand"], p95["percent"]) == ("red", "red", "95")
    assert (p95["used"], p95["quota"]) == ("95 MB used", "95% of 100 MB")
    assert p95["message"] == "Storage almost full. Delete files or upgrade your plan."
    assert p95["fillColor"] == RED

    for element_id, used in (("unl", "14.3 GB used"), ("empty-limit", "5 B used")):
        unl = await shown(bars, element_id)
        assert unl["used"] == used and unl["quota"] == "Unlimited"
        assert unl["band"] == "none" and unl["percent"] is None
        assert unl["barShown"] is False and unl["message"] == "No storage limit set"

    await bars.screenshot(path=str(output_dir / "usage-bar-bands.png"))


async def test_over_limit_is_capped_and_said(bars: Any) -> None:
    over = await shown(bars, "over")
    assert (over["band"], over["percent"], over["overLimit"]) == ("red", "100", "true")
    assert over["quota"] == "100% of 1 kB" and over["width"] == "100%"
    assert over["message"] == "Over the limit by 500 B. Delete files or upgrade your plan."


@pytest.mark.parametrize(
    ("used", "band"),
    [(0, "green"), (694, "green"), (695, "yellow"), (894, "yellow"), (895, "red"), (1000, "red")],
)
async def test_band_boundaries_follow_the_rounded_percentage(
    bars: Any, used: int, band: str
) -> None:
    await bars.evaluate(
        "(used) => document.getElementById('p10').setAttribute('used', String(used))", used
    )
    assert (await shown(bars, "p10"))["band"] == band


async def test_attribute_and_property_changes_rerender(bars: Any) -> None:
    await bars.evaluate("document.getElementById('p10').setAttribute('used', '950')")
    s = await shown(bars, "p10")
    assert (s["band"], s["quota"]) == ("red", "95% of 1 kB")

    await bars.evaluate("document.getElementById('p10').removeAttribute('limit')")
    s = await shown(bars, "p10")
    assert (s["band"], s["quota"], s["barShown"]) == ("none", "Unlimited", False)

    await bars.evaluate("document.getElementById('p10').limit = 1_000_000")
    s = await shown(bars, "p10")
    assert (s["band"], s["quota"], s["barShown"]) == ("green", "0% of 1 MB", True)
    assert await bars.evaluate("document.getElementById('p10').getAttribute('limit')") == "1000000"

    # An element made by script, with properties set before it is attached.
    made = await bars.evaluate(
        """() => {
            const el = document.createElement('storage-usage-bar');
            el.id = 'made';
            el.used = 720; el.limit = 1000;
            document.body.append(el);
            return [el.band, el.percent];
        }"""
    )
    assert made == ["yellow", 72]


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1 kB"),
        (1234, "1.2 kB"),
        (999_949, "999.9 kB"),
        (999_950, "1 MB"),
        (1_200_000_000, "1.2 GB"),
        (5 * 10**12, "5 TB"),
        (-3, "0 B"),
    ],
)
async def test_decimal_units(bars: Any, n: int, text: str) -> None:
    got = await bars.evaluate("(n) => customElements.get('storage-usage-bar').formatBytes(n)", n)
    assert got == text
