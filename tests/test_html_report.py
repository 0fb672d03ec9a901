"""report.html of build-balanced-dataset (issue 12, part 6) and the ratio-scale class plot.

Real GeoTIFFs with hand-built masks (32 px tiles), ingested with a classes CSV whose names
need escaping and whose colours come in three spellings, then the real pipeline:

- ``mix`` (64 x 192, 12 tiles): class 1, with class 2 in the first 2 (j + 1) columns of tile j;
- ``forest`` (64 x 128, 8 tiles): class 3, with class 4 in the first 2 (j + 1) columns;
- ``edge`` (64 x 64, 4 tiles): like mix tile 0; mask pixel (0, 0) is nodata (tile (0, 0)
  excluded: mask_border_nodata) and the image's left column of rows 32-63 is black (tile
  (32, 0) excluded: image_black_border).

With k = 2 the {1, 2} tiles and the {3, 4} tiles form the two clusters, and the rare-class
boost on class 2 orders the mix cluster by its class-2 share, so the galleries are known.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from smt_tools.cli.app import app
from smt_tools.config._loader import validate_mapping
from smt_tools.config.balanced import BalancedFile
from smt_tools.export import report
from smt_tools.export._gallery import (
    PER_SIDE,
    class_rgb,
    cluster_galleries,
    display_rgb,
    excluded_galleries,
    parse_colour,
)
from smt_tools.pipelines.balanced import BalancedResult, run_balanced
from smt_tools.pipelines.ingest import run_ingest
from smt_tools.raster.handles import open_raster
from smt_tools.raster.thumbnail import read_thumbnail
from tests.rasters import write_pair, write_tif

P = 32
NAME2 = "<b>&"
COLOURS = {1: (0x96, 0x8C, 0x6E), 2: (200, 180, 90), 3: (0x28, 0x6E, 0x32), 4: (0, 114, 178)}


def _masks() -> dict[str, np.ndarray]:
    mix = np.ones((64, 192), np.uint8)
    forest = np.full((64, 128), 3, np.uint8)
    for j in range(12):
        r, c = (j // 6) * P, (j % 6) * P
        mix[r : r + P, c : c + 2 * (j + 1)] = 2
    for j in range(8):
        r, c = (j // 4) * P, (j % 4) * P
        forest[r : r + P, c : c + 2 * (j + 1)] = 4
    edge = np.ones((64, 64), np.uint8)
    edge[:, 0:2] = 2
    edge[:, 32:34] = 2
    edge[0, 0] = 0
    return {"mix": mix, "forest": forest, "edge": edge}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, BalancedResult, Path]:
    root = tmp_path_factory.mktemp("html")
    data = root / "data a&b"  # a path that needs escaping in the page
    rows = ["image,mask,group"]
    for name, mask in _masks().items():
        image = np.full((3, *mask.shape), 128, np.uint8)
        if name == "edge":
            image[:, 32:64, 0] = 0
        img, msk = write_pair(data, name, mask, image)
        rows.append(f"{img},{msk},{name}")
    pairs = root / "pairs.csv"
    pairs.write_text("\n".join(rows) + "\n", encoding="utf-8")
    classes = root / "classes.csv"
    classes.write_text(
        'class_value,name,colour\n1,background,#968c6e\n2,"<b>&","200,180,90"\n'
        "3,forest,#286E32\n4,water,\n",
        encoding="utf-8",
    )
    tiles = root / "tiles.parquet"
    run_ingest(
        pairs, catalog=str(tiles), patch_size=P, nodata_class=0, workers=1, class_names_csv=classes
    )
    cfg = {
        "balanced_dataset": {
            "input": {"tiles": str(tiles)},
            "clustering": {"k_selection": "fixed", "k": 2},
            "weights": {"rare_class_boost": 3.0, "rare_class_ids": [2]},
            "output": {"csv_path": str(root / "b.csv"), "report_dir": str(root / "report")},
        }
    }
    result = run_balanced(validate_mapping(cfg, BalancedFile, "t.yaml").balanced_dataset)
    return root, result, data


def _page(root: Path) -> str:
    return (root / "report" / "report.html").read_text(encoding="utf-8")


def _galleries(page: str) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for m in re.finditer(r'<div class="g" id="g-([^"]+)">(.*?)</figure></div>', page):
        out[m.group(1)] = [int(t) for t in re.findall(r'data-tile-id="(\d+)"', m.group(2))]
    return out


def _decode(uri: str) -> np.ndarray:
    b64 = uri.split(",", 1)[1]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def test_report_written_and_listed(built: tuple[Path, BalancedResult, Path]) -> None:
    root, result, _ = built
    html_path = root / "report" / "report.html"
    assert html_path in result.outputs
    assert result.outputs.index(html_path) > result.outputs.index(
        root / "report" / "weight_map.png"
    )
    assert not [p for p in (root / "report").iterdir() if p.name.startswith(".")]  # no temp left
    assert "html_report" in result.timings


def test_class_table_names_colours_shares_and_nodata_row(
    built: tuple[Path, BalancedResult, Path],
) -> None:
    root, result, _ = built
    page = _page(root)
    assert result.class_values == [1, 2, 3, 4]
    names = {1: "background", 2: "&lt;b&gt;&amp;", 3: "forest", 4: "water"}
    for i, v in enumerate(result.class_values):
        u, w = result.uniform_share[i], result.weighted_share[i]
        row = (
            f'<tr><td><span class="sw" style="background:#{"{:02x}{:02x}{:02x}".format(*COLOURS[v])}"></span>'
            f'{v} {names[v]}</td><td class="n">{u:.2%}</td><td class="n">{w:.2%}</td>'
            f'<td class="n">×{w / u:.2f}</td>'
        )
        assert row in page, row
    # the boosted class: its bar on the log2 axis, from the centre, |log2 r| / span of half
    r = result.weighted_share[1] / result.uniform_share[1]
    ratios = [w / u for u, w in zip(result.uniform_share, result.weighted_share, strict=True)]
    span = max(1, int(np.ceil(max(abs(np.log2(x)) for x in ratios))))
    frac = abs(np.log2(r)) / span * 50
    left = 50.0 if r >= 1 else 50.0 - frac
    assert frac > 0.5  # a change of a few % is a visible bar, not a sliver
    assert f"left:{left:.2f}%;width:{frac:.2f}%;background:#c8b45a" in page
    nu, nw = result.nodata_share_uniform, result.nodata_share_weighted
    assert (
        f'<tr class="nd"><td>nodata (0)</td><td class="n">{nu:.2%}</td><td class="n">{nw:.2%}</td>'
        in page
    )
    # escaping: the class name and the folder name never appear raw
    assert NAME2 not in page and "data a&b" not in page
    assert "data a&amp;b" in page
    # tiles: in / excluded by reason / weighted
    assert '<td>in</td><td class="n">24</td>' in page
    assert '<td>excluded</td><td class="n">2</td>' in page
    assert '<td class="n">22</td>' in page
    for reason in ("mask_border_nodata", "image_black_border"):
        assert re.search(
            rf"&nbsp;&nbsp;{reason} <small>\([^)]*\)</small></td><td class=\"n\">1<", page
        )
    assert f"{result.ess:,.1f} of 22" in page


def _ids(root: Path) -> pd.DataFrame:
    df = pd.read_csv(root / "b.csv")
    df["name"] = df["image_path"].map(lambda p: Path(p).stem.removesuffix("_img"))
    return df


def _tile(df: pd.DataFrame, name: str, row: int, col: int) -> int:
    hit = df[(df["name"] == name) & (df["row_off"] == row) & (df["col_off"] == col)]
    assert len(hit) == 1
    return int(hit["tile_id"].iloc[0])


def test_galleries_show_the_expected_tiles(built: tuple[Path, BalancedResult, Path]) -> None:
    root, _, _ = built
    df = _ids(root)
    page = _page(root)
    gal = _galleries(page)
    mix = [_tile(df, "mix", (j // 6) * P, (j % 6) * P) for j in range(12)]
    forest = [_tile(df, "forest", (j // 4) * P, (j % 4) * P) for j in range(8)]
    edge_in = sorted([_tile(df, "edge", 0, P), _tile(df, "edge", P, P)])
    a = int(df.loc[df["tile_id"] == mix[0], "freq_cluster_id"].iloc[0])
    b = int(df.loc[df["tile_id"] == forest[0], "freq_cluster_id"].iloc[0])
    assert {a, b} == {0, 1}
    assert set(df.loc[df["tile_id"].isin(mix + edge_in), "freq_cluster_id"]) == {a}
    # mix cluster (14 tiles): highest = most class 2; lowest = the three tiles with 1/16 class 2
    # (ties by tile_id), then mix tile 1
    assert gal[f"c{a}-high"] == [mix[11], mix[10], mix[9], mix[8]]
    assert gal[f"c{a}-low"] == [*sorted([mix[0], *edge_in]), mix[1]]
    # forest cluster (8 tiles, equal weights: no class 2): all of them, by tile_id
    assert gal[f"c{b}-all"] == sorted(forest)
    assert gal["ex-mask_border_nodata"] == [_tile(df, "edge", 0, 0)]
    assert gal["ex-image_black_border"] == [_tile(df, "edge", P, 0)]
    assert len(gal) == 5
    assert f'<a href="#g-c{a}-high">{a}</a>' in page


def test_composition_means_per_cluster(built: tuple[Path, BalancedResult, Path]) -> None:
    root, _, _ = built
    df = _ids(root)
    page = _page(root)
    b = int(df.loc[df["name"] == "forest", "freq_cluster_id"].iloc[0])
    # forest tile j: (j + 1) / 16 water; mean over j = 0..7 is 36 / 128
    p4 = 36 / 128
    row = (
        f'<tr><td>{b}</td><td class="n">0.00%</td><td class="n">0.00%</td>'
        f'<td class="n">{1 - p4:.2%}</td><td class="n">{p4:.2%}</td></tr>'
    )
    assert row in page
    assert f'title="4 water: {p4:.1%}"' in page


def test_thumbnail_pixels_are_the_mask_in_class_colours(
    built: tuple[Path, BalancedResult, Path],
) -> None:
    root, _, _ = built
    df = _ids(root).set_index("tile_id")
    page = _page(root)
    masks = _masks()
    figs = re.findall(
        r'<figure data-tile-id="(\d+)"><div class="th"><img src="([^"]+)" alt="image">'
        r'<img class="m" src="([^"]+)" alt="mask">',
        page,
    )
    assert len(figs) == 4 + 4 + 8 + 1 + 1
    lut = np.zeros((5, 4), np.uint8)  # value 0 (nodata): transparent
    for v, rgb in COLOURS.items():
        lut[v] = (*rgb, 255)
    for tid, img_uri, mask_uri in figs:
        t = df.loc[int(tid)]
        window = masks[t["name"]][t["row_off"] : t["row_off"] + P, t["col_off"] : t["col_off"] + P]
        expected = lut[np.repeat(np.repeat(window, 4, axis=0), 4, axis=1)]  # 32 -> 128 px
        over = _decode(mask_uri)
        assert over.shape == (128, 128, 4)
        np.testing.assert_array_equal(over, expected)
        img = _decode(img_uri).astype(int)
        assert img.shape == (128, 128, 3)
        if t["name"] == "edge" and (t["row_off"], t["col_off"]) == (P, 0):
            assert np.abs(img[:, :3]).max() <= 12  # the black left column, 4 px wide
            assert np.abs(img[:, 8:] - 128).max() <= 4
        else:
            assert np.abs(img - 128).max() <= 2  # JPEG of a flat grey image
    # the nodata pixel (0, 0) of the edge tile is clear: a 4 x 4 block of alpha 0
    tid = _tile(_ids(root), "edge", 0, 0)
    over = _decode(next(m for t, _, m in figs if int(t) == tid))
    assert (over[:4, :4, 3] == 0).all() and (over[4:, :, 3] == 255).all()


def test_cli_lists_the_report_and_the_option_turns_it_off(
    built: tuple[Path, BalancedResult, Path], tmp_path: Path
) -> None:
    root, _, _ = built
    base = {
        "input": {"tiles": str(root / "tiles.parquet")},
        "clustering": {"k_selection": "fixed", "k": 2},
        "output": {"csv_path": str(tmp_path / "b.csv"), "report_dir": str(tmp_path / "rep")},
    }
    conf = tmp_path / "b.yaml"
    conf.write_text(yaml.safe_dump({"balanced_dataset": base}))
    res = CliRunner().invoke(app, ["build-balanced-dataset", str(conf)])
    assert res.exit_code == 0, res.output
    assert f"Wrote {tmp_path / 'rep' / 'report.html'}" in res.stdout.replace("\n", "")
    base["output"]["html_report"] = False  # type: ignore[index]
    base["output"]["report_dir"] = str(tmp_path / "rep2")  # type: ignore[index]
    cfg = validate_mapping({"balanced_dataset": base}, BalancedFile, "t.yaml").balanced_dataset
    result = run_balanced(cfg)
    assert sorted(p.name for p in (tmp_path / "rep2").iterdir()) == [
        "class_share.png",
        "weight_hist.png",
        "weight_map.png",
    ]
    assert all(p.name != "report.html" for p in result.outputs)


def test_unreadable_raster_is_a_note_not_a_failure(
    built: tuple[Path, BalancedResult, Path], tmp_path: Path
) -> None:
    from smt_tools.export.html_report import HtmlReportData, write_html_report

    root, _, _ = built
    df = pd.read_csv(root / "b.csv")
    df.loc[0, "image_path"] = str(tmp_path / "moved.tif")
    df["height"] = df["width"] = df["patch_size"]
    n = len(df)
    data = HtmlReportData(
        summary={},
        tiles=df,
        counts=np.ones((n, 1), np.int64),
        class_values=np.array([1]),
        labels=np.where(df["excluded"], -1, 0).astype(np.int64),
        weights=df["sampler_weight"].to_numpy(),
        excluded=df["excluded"].to_numpy(bool),
        reasons={},
        uniform_share=np.array([1.0]),
        weighted_share=np.array([1.0]),
    )
    # one cluster of 22 included tiles: make row 0 the single highest
    w = data.weights.copy()
    w[0] = 2.0
    data = dataclasses.replace(data, weights=w)
    path = write_html_report(tmp_path / "r.html", data)
    page = path.read_text(encoding="utf-8")
    assert (
        f'<figure data-tile-id="{int(df["tile_id"][0])}"><div class="th"><div class="err">' in page
    )
    assert "moved.tif: file not found" in page
    assert "1 thumbnails could not be read" in page
    assert page.count('alt="mask"') == 2 * PER_SIDE - 1


@pytest.mark.db
def test_catalog_input_reads_names_and_colours(
    built: tuple[Path, BalancedResult, Path], fresh_database_url: str, tmp_path: Path
) -> None:
    from smt_tools.pipelines.catalog_init import run_catalog_init

    root, local, _ = built
    run_catalog_init(fresh_database_url)
    run_ingest(
        root / "pairs.csv",
        catalog=fresh_database_url,
        patch_size=P,
        nodata_class=0,
        workers=1,
        class_names_csv=root / "classes.csv",
    )
    cfg = {
        "input": {"dsn": fresh_database_url},
        "clustering": {"k_selection": "fixed", "k": 2},
        "weights": {"rare_class_boost": 3.0, "rare_class_ids": [2]},
        "output": {"csv_path": str(tmp_path / "b.csv"), "report_dir": str(tmp_path / "rep")},
    }
    result = run_balanced(
        validate_mapping({"balanced_dataset": cfg}, BalancedFile, "t.yaml").balanced_dataset
    )
    page = (tmp_path / "rep" / "report.html").read_text(encoding="utf-8")
    assert result.uniform_share == pytest.approx(local.uniform_share)
    assert '<span class="sw" style="background:#c8b45a"></span>2 &lt;b&gt;&amp;</td>' in page
    assert '<span class="sw" style="background:#0072b2"></span>4 water</td>' in page
    assert _galleries(page) == _galleries(_page(root))


# --- pieces -----------------------------------------------------------------------------------


def test_parse_colour_spellings() -> None:
    assert parse_colour("#968c6e") == (150, 140, 110)
    assert parse_colour("#FFF") == (255, 255, 255)
    assert parse_colour("200, 180, 90, 255") == (200, 180, 90)
    assert parse_colour("968c6e") == (150, 140, 110)
    assert parse_colour("red") == (255, 0, 0)
    assert parse_colour("300,0,0") is None and parse_colour("nope") is None
    assert parse_colour("") is None and parse_colour(None) is None
    rgb, notes = class_rgb(np.array([1, 2, 3]), {1: "bogus", 2: "#000000"})
    assert rgb == {1: (0, 114, 178), 2: (0, 0, 0), 3: (230, 159, 0)}
    assert len(notes) == 1 and "class 1: colour 'bogus' not understood" in notes[0]


def test_display_scaling_8bit_as_is_others_stretched() -> None:
    inside = np.ones((1, 101), bool)
    u8 = np.arange(0, 101, dtype=np.uint8)[None, None].repeat(3, 0)
    np.testing.assert_array_equal(display_rgb(u8, inside)[0, :, 0], np.arange(101))
    u16 = (np.arange(101, dtype=np.uint16) * 100)[None, None]  # 2 %: 200, 98 %: 9800
    out = display_rgb(u16, inside)[0, :, 0]
    assert out.shape == (101,)
    assert out[0] == 0 and out[2] == 0 and out[98] == 255 and out[100] == 255
    assert out[50] == 128  # (5000 - 200) / 9600 * 255 = 127.5 -> 128
    f = np.linspace(0.0, 1.0, 101)[None, None].copy()
    f[0, 0, 7] = np.nan
    f[0, 0, 9] = -9999.0  # the image nodata value: left out of the stretch and shown 0
    res = display_rgb(f, inside, nodata=-9999.0)[0, :, 0]
    assert res[7] == 0 and res[9] == 0 and res[100] == 255 and res[1] == 0
    flat = np.full((1, 1, 101), 7, np.int16)
    assert (display_rgb(flat, inside) == 0).all()


def test_thumbnail_of_a_padded_window_on_a_crs_less_raster(tmp_path: Path) -> None:
    data = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    path = write_tif(tmp_path / "nocrs.tif", data, crs=None)  # type: ignore[arg-type]
    ds = open_raster(path)
    try:
        # a 64 px window from (32, 32): only its top-left quarter lies on the raster
        arr, inside = read_thumbnail(ds, str(path), [1], 32, 32, 64, 64, 16)
    finally:
        ds.close()
    assert arr.shape == (1, 16, 16) and arr.dtype == np.uint16
    assert inside[:8, :8].all() and inside.sum() == 64
    assert (arr[0, 8:, :] == 0).all() and (arr[0, :, 8:] == 0).all()
    np.testing.assert_array_equal(arr[0, :8, :8], data[34:64:4, 34:64:4])  # block centres


def test_one_band_16_bit_image_thumbnail_is_a_stretched_grey(tmp_path: Path) -> None:
    from smt_tools.export._gallery import read_thumbs

    img = np.tile(np.arange(64, dtype=np.uint16) * 1000, (64, 1))  # columns 0 .. 63000
    mask = np.ones((64, 64), np.uint8)
    mask[:, 32:] = 2
    write_tif(tmp_path / "i.tif", img)
    write_tif(tmp_path / "m.tif", mask)
    tiles = pd.DataFrame(
        {"image_path": [str(tmp_path / "i.tif")], "mask_path": [str(tmp_path / "m.tif")],
         "row_off": [0], "col_off": [0], "height": [64], "width": [64]}
    )  # fmt: skip
    thumbs = read_thumbs(tiles, [0], np.array([1, 2]), {1: (1, 2, 3), 2: (4, 5, 6)}, None, 32)
    grey = _decode(thumbs[0].image).astype(int)
    assert grey.shape == (32, 32)  # one band: a grey JPEG
    assert np.abs(grey[:, 0]).max() <= 3 and np.abs(grey[:, -1] - 255).max() <= 3
    assert (np.diff(grey[16].astype(float)) >= -3).all()  # increasing left to right
    over = _decode(thumbs[0].mask)
    assert (over[:, :16] == (1, 2, 3, 255)).all() and (over[:, 16:] == (4, 5, 6, 255)).all()


def test_gallery_size_is_capped_whatever_n() -> None:
    rng = np.random.default_rng(0)
    n = 155_000
    ids = rng.permutation(n).astype(np.int64)
    labels = rng.integers(0, 40, n)
    weights = rng.random(n)
    excluded = rng.random(n) < 0.1
    gals, left_out = cluster_galleries(ids, labels, weights, excluded, 4, 32)
    assert len(gals) == 64 and left_out == list(range(32, 40))
    assert all(len(g.rows) == 4 for g in gals)
    c0 = np.flatnonzero(~excluded & (labels == 0))
    top = c0[np.lexsort((ids[c0], -weights[c0]))][:4]
    assert gals[0].key == "c0-high" and gals[0].rows == top.tolist()
    ex = excluded_galleries(ids, {"a": excluded, "b": np.zeros(n, bool)}, 8)
    assert [g.key for g in ex] == ["ex-a"] and len(ex[0].rows) == 8
    assert ids[ex[0].rows].tolist() == np.sort(ids[excluded])[:8].tolist()


def test_png_change_panel_is_on_a_ratio_scale_in_class_colours() -> None:
    data = report.ReportData(
        class_values=np.array([1, 2]),
        uniform_share=np.array([0.99, 0.01]),
        weighted_share=np.array([0.9863, 0.0137]),  # x1.37 for the rare class
        weights=np.ones(2),
        excluded=np.zeros(2, bool),
        footprints=pd.DataFrame(),
        class_names={1: "background", 2: "building"},
        class_colours={2: "#dc5a46"},
    )
    fig = report.class_share_figure(data)
    try:
        ax, ax2 = fig.axes
        assert ax.get_yscale() == "log" and ax2.get_yscale() == "log"
        assert [t.get_text() for t in ax.get_xticklabels()] == ["1 background", "2 building"]
        bars = ax2.patches
        assert len(bars) == 2
        rare = bars[1]
        assert rare.get_y() == pytest.approx(1.0)
        assert rare.get_y() + rare.get_height() == pytest.approx(1.37)
        assert rare.get_facecolor()[:3] == pytest.approx((0xDC / 255, 0x5A / 255, 0x46 / 255))
        assert bars[0].get_facecolor()[:3] == pytest.approx((0, 114 / 255, 178 / 255))
        # on the log2 axis the x1.37 bar is log2(1.37) / 1.5 = 30 % of the upper half
        lo, hi = ax2.get_ylim()
        assert (lo, hi) == pytest.approx((2**-1.5, 2**1.5))
        assert "×1.37" in [t.get_text() for t in ax2.texts]
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
