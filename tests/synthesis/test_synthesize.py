"""geospade synthesize: grids, seams, nodata, edits, COG, determinism, interruption, bf16.

Every test uses a tiny random-weight generator (ngf 4, 64-px windows) on rasters of a few
hundred pixels, so the whole file runs in seconds.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from cli_runner import run_cli
from rasterio.transform import from_origin
from torch import nn

from geospade.errors import GeospadeError
from geospade.formats.checkpoint import save_checkpoint
from geospade.landscape import make_landscape
from geospade.normalization import BandStats
from geospade.schemes import CHESAPEAKE7
from geospade.synthesis import synthesize, window_offsets

SIZE = 64


def make_checkpoint(path: Path, *, bands: int = 4, dtype: str = "uint8", high: float = 255,
                    gain: float | None = None, use_vae: bool = False, norm: str = "spade",
                    seed: int = 0) -> Path:
    """A checkpoint of a tiny random generator for chesapeake7 (6 classes), 64-px chips.

    ``gain`` re-initialises the convolutions with a larger xavier gain, so that the output has
    strong spatial structure (the default small gain gives nearly flat images).
    """
    from geospade.models import Generator, StyleEncoder

    torch.manual_seed(seed)
    g = Generator(6, bands, ngf=4, crop_size=SIZE, hidden=8, norm=norm, use_vae=use_vae,
                  z_dim=8)
    if gain is not None:
        with torch.no_grad():
            for m in g.modules():
                if isinstance(m, nn.Conv2d):
                    weight = (m.parametrizations.weight.original
                              if hasattr(m, "parametrizations") else m.weight)
                    nn.init.xavier_normal_(weight, gain=gain)
        # Settle spectral norm's power iteration and batch norm's running statistics on random
        # class maps, as training would (else the outputs saturate).
        for m in g.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.momentum = None  # running statistics = plain average of the batches seen
        g.train()
        with torch.no_grad():
            for _ in range(2):
                g(torch.randint(0, 6, (4, SIZE, SIZE)))
        g.eval()
    names = ["red", "green", "blue", "nir"][:bands]
    payload = {
        "generator_config": g.config, "scheme": CHESAPEAKE7.to_dict(),
        "bands": [BandStats(n, dtype, 0, high).to_dict() for n in names],
        "chip_size": SIZE, "generator": g.state_dict(), "generator_ema": g.state_dict(),
        "config": {"ngf": 4}, "step": 0,
    }
    if use_vae:
        encoder_config = {"in_channels": bands, "ndf": 4, "z_dim": 8, "crop_size": SIZE,
                          "spectral_norm": True}
        payload["encoder"] = StyleEncoder(**encoder_config).state_dict()
        payload["encoder_config"] = encoder_config
    return save_checkpoint(path, payload)


def write_landcover(path: Path, labels: np.ndarray, crs: str = "EPSG:26918",
                    transform=None, nodata: float | None = None) -> Path:
    transform = transform or from_origin(360000.0, 4350000.0, 1.0, 1.0)
    with rasterio.open(path, "w", driver="GTiff", width=labels.shape[1], height=labels.shape[0],
                       count=1, dtype=labels.dtype, crs=crs, transform=transform,
                       nodata=nodata) as dst:
        dst.write(labels, 1)
    return path




@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="module")
def textured_ckpt(tmp_path_factory) -> Path:
    """uint16 output (no quantisation to speak of) with strong spatial structure."""
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "textured.pt", bands=3,
                           dtype="uint16", high=60000, gain=1.0)


@pytest.fixture(scope="module")
def landcover(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lc")
    return make_landscape(root / "lc.tif", root / "im.tif", 150, 100, feature_scale=0.3,
                          nodata_fraction=0.25, seed=1).landcover


@pytest.mark.parametrize("width,height,crs", [
    (150, 100, "EPSG:26918"),   # projected, not a multiple of the window
    (40, 30, "EPSG:4326"),      # geographic, smaller than one window
    (70, 64, "EPSG:4326"),      # geographic, one window tall, a bit more than one wide
])
def test_output_grid_equals_landcover_grid(tmp_path, ckpt, width, height, crs):
    paths = make_landscape(tmp_path / "lc.tif", tmp_path / "im.tif", width, height, crs=crs,
                           feature_scale=0.3)
    summary = synthesize(ckpt, paths.landcover, tmp_path / "out.tif", quiet=True)
    with rasterio.open(paths.landcover) as lc, rasterio.open(tmp_path / "out.tif") as out:
        assert out.crs == lc.crs
        assert out.transform == lc.transform
        assert (out.width, out.height) == (lc.width, lc.height)
        assert out.count == 4 and out.dtypes == ("uint8",) * 4
        assert out.descriptions == ("red", "green", "blue", "nir")
        assert out.colorinterp[:3] == (rasterio.enums.ColorInterp.red,
                                       rasterio.enums.ColorInterp.green,
                                       rasterio.enums.ColorInterp.blue)
        assert out.profile["tiled"] and out.profile["compress"] == "deflate"
        assert out.read().min() >= 1  # no nodata in this land cover; 0 is reserved for nodata
    assert summary["output"] == str(tmp_path / "out.tif")
    assert summary["windows"] == (len(window_offsets(width, SIZE, 16)[0])
                                  * len(window_offsets(height, SIZE, 16)[0]))


def test_window_layout_covers_the_raster_and_cross_fades():
    offsets, lead, trail = window_offsets(150, 64, 16)
    assert offsets == [0, 48, 86]
    assert offsets[-1] + 64 == 150
    assert list(lead) == [0, 16, 26] and list(trail) == [16, 26, 0]
    assert window_offsets(40, 64, 16)[0] == [0]


def _seam_ratio(image: np.ndarray, borders: list[int]) -> float:
    """Mean |difference| of neighbouring pixels across window borders over the same inside."""
    dx = np.abs(np.diff(image, axis=2))
    dy = np.abs(np.diff(image, axis=1))
    across = np.zeros(image.shape[1] - 1, dtype=bool)
    across[[b - 1 for b in borders]] = True
    at = dx[:, :, across].mean() + dy[:, across, :].mean()
    inside = dx[:, :, ~across].mean() + dy[:, ~across, :].mean()
    return float(at / inside)


def test_no_seams_on_a_single_class_raster(tmp_path, textured_ckpt):
    lc = write_landcover(tmp_path / "forest.tif", np.full((160, 160), 2, dtype=np.uint8))
    ratios = {}
    # A random-weight generator has hard edges of its own at multiples of 16 px inside every
    # window (nearest upsampling of its 2 x 2 first feature map); an overlap of 24 puts the
    # window borders elsewhere (multiples of 8), so the statistic measures the blending and not
    # those. Trained generators do not have such edges.
    for overlap in (0, 24):
        out = tmp_path / f"out{overlap}.tif"
        synthesize(textured_ckpt, lc, out, overlap=overlap, quiet=True)
        with rasterio.open(out) as src:
            image = src.read().astype(np.float64)
        offsets = window_offsets(160, SIZE, overlap)[0]
        borders = sorted(set(offsets[1:]) | {o + SIZE for o in offsets[:-1]})
        ratios[overlap] = _seam_ratio(image, borders)
    assert ratios[24] <= 1.5, ratios
    # The statistic does see seams: without overlap the window borders stand out.
    assert ratios[0] > 1.5, ratios


def test_nodata_propagates(tmp_path, ckpt, landcover):
    out = tmp_path / "out.tif"
    synthesize(ckpt, landcover, out, quiet=True)
    with rasterio.open(landcover) as lc, rasterio.open(out) as src:
        labels = lc.read(1)
        image = src.read()
        assert src.nodata == 0
        mask = src.dataset_mask()
    nodata = np.isin(labels, [0, 15])
    assert nodata.any() and (~nodata).any()
    assert (image[:, nodata] == 0).all()
    assert (image[:, ~nodata] > 0).all()
    assert ((mask == 0) == nodata).all()


def test_nodata_window_is_not_run(tmp_path, ckpt):
    labels = np.full((64, 192), 15, dtype=np.uint8)
    labels[:, :64] = 3
    lc = write_landcover(tmp_path / "lc.tif", labels)
    summary = synthesize(ckpt, lc, tmp_path / "out.tif", overlap=0, quiet=True)
    assert summary["windows"] == 3 and summary["windows_run"] == 1


def test_edits_change_only_polygons_plus_receptive_field(tmp_path, textured_ckpt):
    import geopandas as gpd
    from shapely.geometry import box

    labels = np.full((128, 128), 3, dtype=np.uint8)  # low vegetation everywhere
    lc = write_landcover(tmp_path / "lc.tif", labels)
    # A 20 x 20 m field at pixels rows 10..30, cols 20..40, given in WGS 84 (reprojected).
    field = gpd.GeoDataFrame({"to": ["tree canopy and shrubs"]},
                             geometry=[box(360020, 4349970, 360040, 4349990)], crs="EPSG:26918")
    edits = tmp_path / "edits.gpkg"
    field.to_crs("EPSG:4326").to_file(edits)
    base, edited = tmp_path / "base.tif", tmp_path / "edited.tif"
    synthesize(textured_ckpt, lc, base, overlap=16, quiet=True)
    summary = synthesize(textured_ckpt, lc, edited, overlap=16, edits=edits, edit_field="to",
                         save_landcover=tmp_path / "edited_lc.tif", quiet=True)
    with rasterio.open(tmp_path / "edited_lc.tif") as src:
        new_labels = src.read(1)
    burned = new_labels != labels
    assert (new_labels[burned] == 2).all()
    assert burned[12:28, 22:38].all() and burned.sum() < 500
    assert summary["landcover_out"] == str(tmp_path / "edited_lc.tif")

    with rasterio.open(base) as a, rasterio.open(edited) as b:
        changed = (a.read() != b.read()).any(axis=0)
    # Receptive field: the generator sees whole windows, so a pixel may change only if a window
    # covering it also covers an edited pixel.
    offsets = window_offsets(112, SIZE, 16)[0]
    assert offsets == [0, 48]
    reach = np.zeros_like(burned)
    for r in offsets:
        for c in offsets:
            if burned[r:r + SIZE, c:c + SIZE].any():
                reach[r:r + SIZE, c:c + SIZE] = True
    assert changed.any()
    assert not (changed & ~reach).any()
    assert changed[burned].mean() > 0.5


def test_edit_field_accepts_raw_class_values(tmp_path, ckpt):
    import geopandas as gpd
    from shapely.geometry import box

    lc = write_landcover(tmp_path / "lc.tif", np.full((64, 64), 3, dtype=np.uint8))
    edits = tmp_path / "edits.geojson"
    gpd.GeoDataFrame({"cls": [1]}, geometry=[box(360000, 4349990, 360010, 4350000)],
                     crs="EPSG:26918").to_file(edits)
    synthesize(ckpt, lc, tmp_path / "out.tif", edits=edits, edit_field="cls",
               save_landcover=tmp_path / "lc_out.tif", quiet=True)
    with rasterio.open(tmp_path / "lc_out.tif") as src:
        saved = src.read(1)
        assert src.colormap(1)[1][:3] == (0, 197, 255)
    assert (saved[:10, :10] == 1).all() and (saved[10:, :] == 3).all()


def test_cog_is_valid(tmp_path, ckpt):
    paths = make_landscape(tmp_path / "lc.tif", tmp_path / "im.tif", 300, 280, feature_scale=0.3)
    out = tmp_path / "out.tif"
    synthesize(ckpt, paths.landcover, out, cog=True, overlap=0, quiet=True)
    with rasterio.open(out) as src:
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert src.profile["tiled"] and src.block_shapes[0] == (256, 256)
        assert src.overviews(1) == [2]
        assert src.compression.name.lower() == "deflate"
        assert (src.width, src.height) == (300, 280)
    # GDAL's COG layout checks: the structural metadata ghost area comes first and says the
    # IFDs precede the image data.
    head = out.read_bytes()[:1000]
    assert b"GDAL_STRUCTURAL_METADATA" in head
    assert b"LAYOUT=IFDS_BEFORE_DATA" in head
    assert not list(tmp_path.glob(".out.tif*"))


@pytest.mark.parametrize("cog", [False, True])
def test_codec_choice_changes_the_encoding_not_the_pixels(tmp_path, ckpt, cog):
    paths = make_landscape(tmp_path / "lc.tif", tmp_path / "im.tif", 300, 280, feature_scale=0.3)
    pixels = {}
    for codec in ("deflate", "zstd", "lzw") + (() if cog else ("none",)):
        out = tmp_path / f"{codec}.tif"
        synthesize(ckpt, paths.landcover, out, cog=cog, compress=codec, overlap=0, quiet=True)
        with rasterio.open(out) as src:
            assert (src.compression.name.lower() if src.compression else "none") == codec
            assert src.overviews(1) == [2]
            assert src.interleaving.name.lower() == ("pixel" if cog else "band")
            pixels[codec] = src.read()
    assert all(np.array_equal(pixels["deflate"], p) for p in pixels.values())
    with pytest.raises(GeospadeError, match="jpeg is for 8-bit imagery with 3 bands"):
        synthesize(ckpt, paths.landcover, tmp_path / "j.tif", compress="jpeg", quiet=True)
    if cog:
        with pytest.raises(GeospadeError, match="a COG is written compressed"):
            synthesize(ckpt, paths.landcover, tmp_path / "j.tif", cog=True, compress="none",
                       quiet=True)
    assert not (tmp_path / "j.tif").exists()


@pytest.mark.parametrize("cog", [False, True])
def test_uncompressed_intermediate_or_not_same_result(tmp_path, ckpt, cog, monkeypatch):
    # With room on disk the rows go to an uncompressed intermediate that one copy compresses;
    # without, they are compressed as they come. Same pixels, overviews and metadata.
    import geospade.raster.strip_writer as writer

    paths = make_landscape(tmp_path / "lc.tif", tmp_path / "im.tif", 600, 530, feature_scale=0.3)
    synthesize(ckpt, paths.landcover, tmp_path / "raw.tif", cog=cog, overlap=8, quiet=True)
    monkeypatch.setattr(writer, "disk_has_room", lambda path, nbytes: False)
    synthesize(ckpt, paths.landcover, tmp_path / "direct.tif", cog=cog, overlap=8, quiet=True)
    with rasterio.open(tmp_path / "raw.tif") as a, rasterio.open(tmp_path / "direct.tif") as b:
        for key in ("crs", "transform", "width", "height", "count", "dtype", "nodata",
                    "blockxsize", "blockysize", "compress", "tiled", "interleave"):
            assert a.profile.get(key) == b.profile.get(key), key
        assert a.descriptions == b.descriptions and a.colorinterp == b.colorinterp
        assert a.overviews(1) == b.overviews(1) == [2, 4]
        assert np.array_equal(a.read(), b.read())
        for f in (2, 4):
            shape = (a.count, -(-a.height // f), -(-a.width // f))
            diff = np.abs(a.read(out_shape=shape).astype(int) - b.read(out_shape=shape))
            # GDAL averages level 4 from level 2; the COG driver, given no overviews, from the
            # full resolution: rounding may differ by one.
            assert diff.max() == 0 if (f == 2 or not cog) else diff.max() <= 1
        if not cog:
            assert a.tags(ns="rio_overview") == b.tags(ns="rio_overview") == {
                "resampling": "average"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_geotiff_has_internal_overviews(tmp_path, ckpt):
    paths = make_landscape(tmp_path / "lc.tif", tmp_path / "im.tif", 300, 100, feature_scale=0.3)
    synthesize(ckpt, paths.landcover, tmp_path / "out.tif", overlap=0, quiet=True)
    with rasterio.open(tmp_path / "out.tif") as src:
        assert src.overviews(1) == [2]
    assert not (tmp_path / "out.tif.ovr").exists()


def test_same_seed_gives_identical_bytes(tmp_path, landcover):
    vae = make_checkpoint(tmp_path / "vae.pt", use_vae=True)
    a, b, c = tmp_path / "a.tif", tmp_path / "b.tif", tmp_path / "c.tif"
    synthesize(vae, landcover, a, seed=3, quiet=True)
    synthesize(vae, landcover, b, seed=3, quiet=True)
    synthesize(vae, landcover, c, seed=4, quiet=True)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_style_image_sets_the_code(tmp_path, landcover):
    vae = make_checkpoint(tmp_path / "vae.pt", use_vae=True)
    style = make_landscape(tmp_path / "slc.tif", tmp_path / "style.tif", 64, 64).imagery
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    synthesize(vae, landcover, a, style=style, seed=1, quiet=True)
    synthesize(vae, landcover, b, style=style, seed=2, quiet=True)
    assert a.read_bytes() == b.read_bytes()  # the style, not the seed, decides
    # With an EMA encoder in the checkpoint, the style code comes from it (it goes with the
    # EMA generator); the same weights as the encoder give the same image.
    data = torch.load(vae, weights_only=True)
    same = save_checkpoint(tmp_path / "same.pt", {**data, "encoder_ema": data["encoder"]})
    other_weights = {k: v * 1.5 if v.is_floating_point() else v
                     for k, v in data["encoder"].items()}
    other = save_checkpoint(tmp_path / "other.pt", {**data, "encoder_ema": other_weights})
    synthesize(same, landcover, tmp_path / "same.tif", style=style, quiet=True)
    synthesize(other, landcover, tmp_path / "other.tif", style=style, quiet=True)
    with rasterio.open(a) as x, rasterio.open(tmp_path / "same.tif") as y, \
            rasterio.open(tmp_path / "other.tif") as z:
        assert np.array_equal(x.read(), y.read())
        assert not np.array_equal(x.read(), z.read())


def test_bbox_and_window_give_the_part_grid(tmp_path, ckpt, landcover):
    with rasterio.open(landcover) as lc:
        transform = lc.transform
    synthesize(ckpt, landcover, tmp_path / "w.tif", window="10,20,90,70", quiet=True)
    x0, y0 = transform * (10, 20)
    x1, y1 = transform * (100, 90)
    synthesize(ckpt, landcover, tmp_path / "b.tif", bbox=(x0, y1, x1, y0), quiet=True)
    for name in ("w.tif", "b.tif"):
        with rasterio.open(tmp_path / name) as src:
            assert (src.width, src.height) == (90, 70)
            assert src.transform == transform * transform.translation(10, 20)


def test_bf16_stays_close_to_fp32(tmp_path, textured_ckpt, landcover):
    from geospade.models import cpu_supports_bf16
    from geospade.synthesis import load_synthesis_model

    if not cpu_supports_bf16():
        pytest.skip("no native bf16 on this CPU")
    fp32 = load_synthesis_model(textured_ckpt, device="cpu", amp="none")
    bf16 = load_synthesis_model(textured_ckpt, device="cpu", amp="bf16")
    with rasterio.open(landcover) as src:
        raw = src.read(1, window=rasterio.windows.Window(0, 0, 128, 64))
    labels = CHESAPEAKE7.encode(raw)
    chips = np.stack([labels[:, :64], labels[:, 64:]])
    a, b = fp32(chips), bf16(chips)
    assert bf16.amp == "bf16" and fp32.amp == "none"
    diff = np.abs(a - b)
    # Output range is [-1, 1]: mean error under 1% of the range, worst pixel under 5%.
    assert diff.mean() < 0.02 and diff.max() < 0.1


def test_cpu_synthesis_runs_the_fused_generator(textured_ckpt, landcover):
    from geospade.models import FusedGenerator, Generator, fused_available
    from geospade.synthesis import load_synthesis_model

    if not fused_available():
        pytest.skip("PyTorch lacks oneDNN fusion")
    fused = load_synthesis_model(textured_ckpt, device="cpu", amp="none")
    eager = load_synthesis_model(textured_ckpt, device="cpu", amp="none", fused=False)
    assert isinstance(fused.generator, FusedGenerator)
    assert isinstance(eager.generator, Generator)
    with rasterio.open(landcover) as src:
        raw = src.read(1, window=rasterio.windows.Window(0, 0, 128, 64))
    labels = CHESAPEAKE7.encode(raw)
    chips = np.stack([labels[:, :64], labels[:, 64:]])
    a, b = fused(chips), eager(chips)
    assert a.std() > 0.05
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_cpu_synthesis_falls_back_without_onednn_fusion(textured_ckpt, monkeypatch):
    from geospade.models import Generator, fused
    from geospade.synthesis import load_synthesis_model

    def unsupported(*args, **kwargs):
        raise RuntimeError("Unary Fusion behavior undefined.")

    # A build whose post-ops fail: the probe says no, and synthesis runs the eager generator.
    monkeypatch.setattr(fused.PackedConv, "binary", unsupported)
    fused.fused_available.cache_clear()
    try:
        assert not fused.fused_available()
    finally:
        fused.fused_available.cache_clear()
    monkeypatch.setattr(fused, "fused_available", lambda: False)
    model = load_synthesis_model(textured_ckpt, device="cpu", amp="none")
    assert isinstance(model.generator, Generator)


@pytest.mark.parametrize("crash", [RuntimeError("boom"), KeyboardInterrupt()])
def test_killed_run_leaves_no_output(tmp_path, ckpt, landcover, capsys, monkeypatch, crash):
    from geospade.synthesis.model import SynthesisModel

    original = SynthesisModel.__call__
    calls = []

    def dying(self, chips):
        calls.append(1)
        if len(calls) == 2:
            raise crash
        return original(self, chips)

    monkeypatch.setattr(SynthesisModel, "__call__", dying)
    out = tmp_path / "out" / "synthetic.tif"
    args = ["synthesize", str(ckpt), str(landcover), "-o", str(out), "--batch-size", "2",
            "--cog", "--save-landcover", str(tmp_path / "out" / "lc.tif")]
    code, _, err = run_cli(args, capsys)
    assert len(calls) == 2
    assert code == (1 if isinstance(crash, RuntimeError) else 130)
    assert "geospade: " in err and err.strip().count("\n") == 0
    assert not out.parent.exists()  # the folder it created is removed too


def test_existing_output_needs_overwrite(tmp_path, ckpt, landcover, capsys):
    out = tmp_path / "out.tif"
    out.write_bytes(b"keep me")
    code, _, err = run_cli(["synthesize", str(ckpt), str(landcover), "-o", str(out)], capsys)
    assert code == 1 and "--overwrite" in err and err.count("\n") == 1
    assert out.read_bytes() == b"keep me"
    # --overwrite replaces only a GeoTIFF (what synthesize writes), never a file of notes.
    code, _, err = run_cli(["synthesize", str(ckpt), str(landcover), "-o", str(out),
                            "--overwrite"], capsys)
    assert code == 1 and "is not a GeoTIFF" in err and err.count("\n") == 1
    assert out.read_bytes() == b"keep me"
    shutil.copy(landcover, out)
    code, out_text, _ = run_cli(["synthesize", str(ckpt), str(landcover), "-o", str(out),
                                 "--overwrite"], capsys)
    assert code == 0 and "Mpx/s" in out_text and str(out) in out_text
    with rasterio.open(out) as src:
        assert src.count == 4
