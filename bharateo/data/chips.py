"""Chips: square crops of ROIs, their input tokens, pixel labels and patch-mode labels.

A chip set carries its input bands (`ChipSet.bands`, from the pixel source named by
`ChipConfig.source`, see bharateo/data/sources.py); its channel count is `len(bands)`. WorldCover chips
are palette RGB (worldcover.PALETTE_BANDS), rendered from their class ids; a source with its own
pixel values (e.g. reflectance) stores them in `ChipSet.pixels`.

Sampling follows the notebook exactly (same seeded draws, same rejection rule, ROIs in
round-robin), only vectorised: candidates are drawn and tested in batches, then the generator is
rewound and advanced by exactly the draws that were used, so the chips are the notebook's chips.
Chips keep their class ids (1 byte a pixel); the float palette-RGB tokens the model reads are
rendered per batch, so a class of thirty sessions doesn't hold thirty 75 MB token tensors.
A held-out region (a whole ROI, or one half of one) never shares a pixel with a training chip.

THE NO-DATA RULE (the one place it is written down; README, pages and tests refer here).
WorldCover code 0 (open sea, outside coverage) is no-data, never a land-cover class:
  1. It collapses to NODATA_ID (255), not to a class id 0..7, and is painted black.
  2. A candidate chip with more than MAX_CHIP_NODATA_FRACTION (10 %) no-data pixels is rejected
     and drawn again, like a chip with too few classes. 10 % keeps coastline chips (a strip of
     sea along one edge) while at most 6 of a 128 px chip's 64 patches can be all sea (12 half
     sea), so every chip is mostly land cover and the model is not trained on open sea.
  3. No-data never counts toward `min classes`: only classes 0..7 are counted.
  4. A patch whose pixels are at least half no-data (PATCH_NODATA_FRACTION) gets the patch label
     IGNORE_INDEX (-100, PyTorch's cross-entropy default); any other patch gets the most frequent
     land-cover class among its valid pixels (ties: the lowest id, the notebook's tie-break).
  5. IGNORE patches are left out of both training losses (the pixel loss on masked tokens and
     the patch-class cross-entropy) and of every metric: masked MAE, ESA accuracy, the confusion
     matrix, the per-class report, the per-class reconstruction error and the mask-ratio curve.
     Their pixels still feed the encoder as black input, as any visible pixel does.
The notebook's three regions hold no no-data, so for them none of this changes a bit: the fast
packed patch-mode path and the notebook's draws are used unchanged; only chips that contain
no-data take the slower exact path in `patch_mode_labels`.

Hopeless requests fail fast: once FAIL_FAST_MIN_ATTEMPTS draws have been made in a region, the
request stops with a ChipError as soon as even an optimistic acceptance rate (the observed one
plus three standard errors) can't reach the chips still wanted within the notebook's budget of
400 draws per chip. A request that can still succeed draws exactly as the notebook does.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch

from bharateo.errors import ChipError
from bharateo.data.patches import patchify
from bharateo.data.reflectance import BandStats, band_stats, composite, normalise
from bharateo.config.settings import setting
from bharateo.data.sources import DEFAULT_SOURCE, PIXEL_SOURCES, pixel_source
from bharateo.data.worldcover import (IGNORE_INDEX, NATIVE_TO_COLLAPSED_ID, NODATA, NODATA_ID,
                                 NUM_CLASSES, PALETTE, PALETTE_BANDS,
                                 collapse_worldcover, labels_to_rgb)

HOLDOUT_BLOCKS = ("north", "south", "east", "west")
MAX_CHIP_NODATA_FRACTION = 0.10  # rule 2 of the no-data rule above
PATCH_NODATA_FRACTION = 0.5  # rule 4: a patch at least this share no-data is IGNORE_INDEX
ATTEMPTS_PER_CHIP = 400  # the notebook's budget: `attempts < n * 400`
FAIL_FAST_MIN_ATTEMPTS = 2000  # draws in a region before its acceptance rate is judged


MAX_CHIPS = 10_000_000  # bound of any chip config: a chip store (storage/chipstore.py) streams them to disk
# (docs/scale.md's 1M-chip plan, ten times over); a new run takes up to 4096 (its limits)
MAX_IN_MEMORY_CHIPS = 100_000  # build_chip_sets holds its chips (16.5 KB each at 128 px)


@dataclass(frozen=True)
class ChipConfig:
    """How chips are cut, each field declared once (bharateo/config/settings.py): the CLI's flags,
    the checks and (bharateo/app/knobs.py) the Chips and Train pages' fields come from these."""

    n_chips: int = setting(384, label="chips", bounds=(1, MAX_CHIPS), limits=(16, 4096),
                           help="fewer than 16 can't fill a batch; more than 4096 take too long "
                                "to cut and train in a lesson (for more, cut a chip store: "
                                "python -m bharateo chips build)")
    chip_size: int = setting(128, label="chip size (px)", bounds=(1, 1024), commands=("tokens",),
                             help="128 px ≈ 1.2 km N-S (1/12000° pixels): 8 × 8 = 64 tokens of "
                                  "16 × 16 px")
    patch_size: int = setting(16, label="patch size (px)", bounds=(1, 64),
                              commands=("tokens",), help="side of one token's square of pixels")
    min_classes: int = setting(2, label="min classes per chip", bounds=(1, 8), limits=(1, 8),
                               help="chips with fewer distinct land-cover classes are drawn "
                                    "again (there are 8; no data never counts as a class)")
    seed: int = setting(42, label="seed", bounds=(0, 2**63 - 1), limits=(0, 2**31 - 1),
                        help="seeds are whole numbers from 0 to 2^31 - 1")
    # name of an ROI kept out of training
    holdout_roi: str | None = setting(None, label="held-out region",
                                      help="a region kept out of training to test on; none: "
                                           "evaluate on training chips")
    # None: the whole ROI; or one half: north/south/east/west
    holdout_block: str | None = setting(None, label="held-out part", choices=HOLDOUT_BLOCKS,
                                        help="the half of the held-out region kept out, or all "
                                             "of it")
    n_holdout_chips: int = setting(64, label="held-out chips",
                                   bounds=(1, MAX_IN_MEMORY_CHIPS),
                                   help="1024 are plenty to measure a held-out region")
    # a name in sources.PIXEL_SOURCES; older runs have no key: palette RGB
    source: str = setting(DEFAULT_SOURCE, label="pixel source", choices=lambda: tuple(PIXEL_SOURCES),
                          commands=("prefetch", "inspect"),
                          help="where the chips' input bands come from (bharateo/data/sources.py)")
    # Sentinel-2 sources: which scene a region is read from (bharateo/data/sentinel2/)
    dates: str = setting("2021-01-01/2021-12-31", label="Sentinel-2 dates",
                         commands=("prefetch", "inspect"),
                         help="the scenes' sensing dates, first/last day (YYYY-MM-DD/YYYY-MM-DD); "
                              "the least cloudy scene covering a region is read")
    max_cloud: float = setting(20.0, label="Sentinel-2 max cloud (percent)", bounds=(0, 100),
                               commands=("prefetch", "inspect"),
                               help="the most cloud over a scene, in percent (its "
                                    "eo:cloud_cover)")

    @property
    def bands(self) -> tuple[str, ...]:
        """The input bands of the chips these settings cut, in channel order: their pixel
        source's (bharateo/data/sources.py). ConfigError naming the known sources for an
        unknown one."""
        return pixel_source(self.source).bands

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SamplingRegion:
    """A rectangle of one ROI that chips are drawn from (ROI pixel coordinates)."""

    roi_index: int
    row: int
    col: int
    height: int
    width: int


@dataclass
class ChipSet:
    """K chips of C = len(bands) input channels. Palette-RGB chips are stored compactly as class
    ids and their tokens rendered per batch; a source with its own values stores them in `pixels`.

    labels:       K x S x S uint8   collapsed class per pixel (NODATA_ID for no-data)
    patch_labels: K x G x G int64   dominant class per p x p patch (G = S/p), IGNORE_INDEX for a
                                    mostly no-data patch (see the no-data rule above)
    roi_index:    K int             which ROI each chip came from
    origins:      K x 2 int         (row, col) of each chip's corner in its ROI
    rejected_nodata: candidate chips drawn and rejected for holding too much no-data
    bands:        the C input bands in channel order (worldcover.PALETTE_BANDS: palette RGB)
    pixels:       None (palette RGB rendered from `labels`), or K x C x S x S float32 input values
                  (Sentinel-2: reflectance, normalised per band with `band_stats` in tokens())
    band_stats:   per-band mean/std of the training chips' valid pixels (reflectance.BandStats),
                  or None: pixels are used as they are
    Raises ChipError when `pixels` doesn't match the bands or the labels' shape.
    """

    labels: np.ndarray
    patch_labels: np.ndarray
    roi_index: np.ndarray
    origins: np.ndarray
    roi_names: list[str]
    chip_size: int
    patch_size: int
    rejected_nodata: int = 0
    bands: tuple[str, ...] = PALETTE_BANDS
    pixels: np.ndarray | None = None
    band_stats: BandStats | None = None

    def __post_init__(self):
        self.bands = tuple(self.bands)
        if self.pixels is None:
            if self.bands != PALETTE_BANDS:
                raise ChipError(f"Chips with bands {self.bands} need their pixel values: only "
                                f"palette-RGB chips {PALETTE_BANDS} are drawn from class ids.")
        elif self.pixels.shape != (len(self.labels), len(self.bands)) + self.labels.shape[1:]:
            raise ChipError(f"Chip pixels of shape {self.pixels.shape} don't match "
                            f"{len(self.labels)} chips of {len(self.bands)} bands "
                            f"{self.bands} and {self.labels.shape[1:]} px.")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def channels(self) -> int:
        """Input channels C: one per band."""
        return len(self.bands)

    @property
    def grid_size(self) -> int:
        return self.chip_size // self.patch_size

    def tokens(self, index=slice(None), stats: BandStats | None = None) -> torch.Tensor:
        """Chips `index` as B x N x (C*p*p) float32 tokens, channel-major, the model's input.

        Pixel values are normalised per band with `stats` (default: this set's band_stats; the
        model's own via tokens_for), no-data pixels 0 (reflectance.normalise)."""
        if self.pixels is None:
            return labels_to_tokens(self.labels[index], self.patch_size)
        pixels = np.asarray(self.pixels[index], dtype=np.float32)
        pixels = pixels.reshape((-1,) + self.pixels.shape[1:])
        stats = stats or self.band_stats
        if stats is not None:
            valid = self.labels[index].reshape((-1,) + self.labels.shape[1:]) != NODATA_ID
            pixels = normalise(pixels, valid, stats)
        return patchify(torch.from_numpy(pixels), self.patch_size).contiguous()

    def picture(self, i: int, which: str = "true") -> np.ndarray:
        """Chip i as an S x S x 3 float image: palette colours (palette-RGB chips), or the true
        (B04 B03 B02) or false (B08 B04 B03) colour composite of its reflectance, 2-98 % stretch
        (reflectance.composite), no-data and cloud black."""
        if self.pixels is None:
            return self.rgb(i)
        return composite(self.pixels[i], self.bands, which, self.labels[i] != NODATA_ID)

    def patch_targets(self, index=slice(None)) -> torch.Tensor:
        """B x N int64 patch labels in token order."""
        return torch.from_numpy(self.patch_labels[index].reshape(-1, self.grid_size ** 2))

    def rgb(self, i: int) -> np.ndarray:
        """Chip i's class ids as an S x S x 3 float palette picture (whatever its bands)."""
        return labels_to_rgb(self.labels[i])

    def chips_per_roi(self) -> dict[str, int]:
        counts = np.bincount(self.roi_index, minlength=len(self.roi_names))
        return dict(zip(self.roi_names, counts.tolist()))

    def patch_class_counts(self) -> np.ndarray:
        """Patches per class (NUM_CLASSES), leaving out IGNORE_INDEX (no-data) patches."""
        labels = self.patch_labels.ravel()
        return np.bincount(labels[labels >= 0], minlength=NUM_CLASSES)

    def ignored_patches(self) -> int:
        """Patches labelled IGNORE_INDEX (at least half no-data): left out of losses and metrics."""
        return int(np.count_nonzero(self.patch_labels == IGNORE_INDEX))


# Per-class counts of a 16 x 16 patch packed in one uint64: 9 bits per class for classes 0..6
# (a count is at most 256 < 512); class 7's count is what is left over.
_COUNT_BITS = 9
_PACKED_ONE = np.array([1 << (_COUNT_BITS * c) if c < NUM_CLASSES - 1 else 0
                        for c in range(NUM_CLASSES)], dtype=np.uint64)
# The same for 4 pixels at once, indexed by their 4 class ids (3 bits each) as one 12-bit number.
_PACKED_FOUR = sum(_PACKED_ONE[(np.arange(8 ** 4) >> (3 * j)) & 7] for j in range(4))
_WORKERS = ThreadPoolExecutor(max_workers=2)


def _patch_modes(labels: np.ndarray, patch_size: int) -> np.ndarray:
    k, s, _ = labels.shape
    g, p = s // patch_size, patch_size
    if p % 4 == 0:  # 4 pixels per lookup: bytes b0..b3 of a uint32 -> b0 | b1<<3 | b2<<6 | b3<<9
        x = np.ascontiguousarray(labels).view("<u4")
        x = x | (x >> 5)
        packed = np.take(_PACKED_FOUR, (x & 0x3F) | ((x >> 10) & 0xFC0))
    else:
        packed = np.take(_PACKED_ONE, labels)
    sums = packed.reshape(k * g, p, g, -1).sum(axis=1).sum(axis=2)  # k*g x g
    shifts = np.arange(NUM_CLASSES - 1, dtype=np.uint64) * np.uint64(_COUNT_BITS)
    counts = ((sums[..., None] >> shifts) & np.uint64(2 ** _COUNT_BITS - 1)).astype(np.int32)
    counts = np.concatenate([counts, p * p - counts.sum(-1, keepdims=True)], axis=-1)
    return counts.argmax(axis=-1).reshape(k, g, g)


def _patch_modes_with_nodata(labels: np.ndarray, patch_size: int) -> np.ndarray:
    """The exact (slower) path for chips holding no-data: rule 4 of the no-data rule."""
    k, s, _ = labels.shape
    g, p = s // patch_size, patch_size
    blocks = labels.reshape(k, g, p, g, p).transpose(0, 1, 3, 2, 4).reshape(k, g, g, p * p)
    counts = np.stack([np.count_nonzero(blocks == c, axis=-1) for c in range(NUM_CLASSES)], -1)
    modes = counts.argmax(axis=-1)  # first maximum: the lowest id, as the notebook
    nodata = p * p - counts.sum(axis=-1)
    modes[nodata >= PATCH_NODATA_FRACTION * p * p] = IGNORE_INDEX
    return modes


def patch_mode_labels(labels: np.ndarray, patch_size: int) -> np.ndarray:
    """K x S x S collapsed ids -> K x G x G int64 most frequent class per patch (ties: lowest id);
    IGNORE_INDEX for a patch at least half no-data (the no-data rule in this module's docstring).

    Counts come from one packed sum per patch instead of a bincount per patch (looked up 4 pixels
    at a time when the patch width allows); argmax returns the first maximum, the notebook's
    `np.bincount(...).argmax()` tie-break. Two halves run on two threads (numpy releases the GIL).
    Chips holding no-data (never in the notebook's regions) take an exact per-class count instead.
    """
    if patch_size * patch_size >= 2 ** _COUNT_BITS:
        raise ChipError(f"Patch size {patch_size} is too large (at most 22 px).")
    if len(labels) and labels.max() == NODATA_ID:  # max(): a 0.1 ms check for 384 chips
        has_nodata = (labels == NODATA_ID).reshape(len(labels), -1).any(axis=1)
        out = np.empty((len(labels),) + (labels.shape[1] // patch_size,) * 2, dtype=np.int64)
        if (~has_nodata).any():
            out[~has_nodata] = patch_mode_labels(labels[~has_nodata], patch_size)
        out[has_nodata] = _patch_modes_with_nodata(labels[has_nodata], patch_size)
        return out
    halves = np.array_split(labels, 2) if len(labels) > 1 else [labels]
    return np.concatenate(list(_WORKERS.map(_patch_modes, halves, [patch_size] * len(halves))))


def labels_to_tokens(labels: np.ndarray, patch_size: int) -> torch.Tensor:
    """B x S x S collapsed ids -> B x N x (3*p*p) palette-RGB tokens (no-data black),
    channel-major inside a token (channels: PALETTE_BANDS, one per palette column).

    Same values and layout as the notebook's `patchify(labels_to_rgb_input(...))`, built with one
    1-byte transpose and a palette lookup per channel straight into the output.
    """
    b, s, _ = labels.shape
    g, p = s // patch_size, patch_size
    blocks = labels.reshape(b, g, p, g, p).transpose(0, 1, 3, 2, 4).reshape(b, g * g, p * p)
    c = len(_PALETTE_BY_CHANNEL)
    out = np.empty((b, g * g, c, p * p), dtype=np.float32)
    for channel, palette in enumerate(_PALETTE_BY_CHANNEL):
        np.take(palette, blocks, out=out[:, :, channel])
    return torch.from_numpy(out.reshape(b, g * g, c * p * p))


_PALETTE_BY_CHANNEL = np.ascontiguousarray(PALETTE.T)  # len(PALETTE_BANDS) x 256 collapsed ids


def _distinct_classes(chips: np.ndarray) -> np.ndarray:
    """B x S x S collapsed ids -> B number of distinct land-cover classes in each chip.

    No-data never counts (rule 3): 1 << 255 overflows a uint8 to 0, so it sets no bit."""
    bits = np.left_shift(np.uint8(1), chips)  # class c -> bit c; NODATA_ID -> 0
    present = np.bitwise_or.reduce(bits.reshape(len(chips), -1), axis=1)
    return np.bitwise_count(present)


@dataclass
class SamplingTally:
    """What a sampling pass counted besides its chips: draws made, candidates rejected for
    holding too much no-data (rule 2 of the no-data rule)."""

    attempts: int = 0
    rejected_nodata: int = 0


CHUNK_BYTES = 16 * 2 ** 20  # candidate pixels tested at once: 1,024 chips of 128 px


def _region_chunks(native_roi, region, want, chip_size, min_classes, rng, attempts_left,
                   name, progress, tally: SamplingTally):
    """Draw chips from one region the way the notebook does, in batches -> yields (collapsed
    chips K x S x S uint8, origins K x 2 in ROI pixels) as they are accepted.

    The notebook draws row, col per attempt and keeps the chip if it has >= min_classes classes;
    here a batch of attempts is drawn at once, and the generator is rewound and re-advanced by
    exactly the attempts consumed, so the chips don't depend on the batch size. A batch is tested
    in chunks of at most CHUNK_BYTES of candidate pixels, so memory stays bounded however many
    chips are wanted; the hopeless-request check (see above) still runs after every whole batch.
    A region holding no-data also rejects chips over MAX_CHIP_NODATA_FRACTION no-data.
    `progress(chips accepted so far)` (or None) is called after every chunk; `tally`, this
    region's own, counts the draws used and the no-data rejections.
    """
    high_r, high_c = region.height - chip_size, region.width - chip_size
    if high_r <= 0 or high_c <= 0:
        raise ChipError(
            f"A {chip_size} px chip doesn't fit in a {region.height} x {region.width} px region. "
            "Use a smaller chip size or a larger region.")
    view = native_roi[region.row:region.row + region.height, region.col:region.col + region.width]
    windows = np.lib.stride_tricks.sliding_window_view(view, (chip_size, chip_size))
    has_nodata = bool(view.min() == NODATA)  # code 0 is the smallest; never on the notebook's ROIs
    max_nodata = int(MAX_CHIP_NODATA_FRACTION * chip_size * chip_size)
    chunk = max(1, CHUNK_BYTES // (chip_size * chip_size))
    got = 0
    while got < want and tally.attempts < attempts_left:
        missing = want - got  # the notebook-sized batch; the hopeless check runs after each
        batch_end = tally.attempts + min(missing + missing // 4 + 8, attempts_left - tally.attempts)
        while got < want and tally.attempts < batch_end:
            n, missing = min(batch_end - tally.attempts, chunk), want - got
            state = rng.bit_generator.state
            draws = _draw_origins(rng, high_r, high_c, n)
            candidates = collapse_worldcover(windows[draws[:, 0], draws[:, 1]])
            keep = _distinct_classes(candidates) >= min_classes
            if has_nodata:
                too_much = np.count_nonzero(candidates.reshape(n, -1) == NODATA_ID, 1) > max_nodata
                keep &= ~too_much
            accepted = np.flatnonzero(keep)[:missing]
            consumed = n if len(accepted) < missing else int(accepted[-1]) + 1
            if has_nodata:
                tally.rejected_nodata += int(np.count_nonzero(too_much[:consumed]))
            tally.attempts += consumed
            rng.bit_generator.state = state
            _draw_origins(rng, high_r, high_c, consumed)
            got += len(accepted)
            if progress is not None:
                progress(got)
            if len(accepted):
                yield candidates[accepted], draws[accepted] + (region.row, region.col)
        if got < want:
            _fail_if_hopeless(name, want, got, tally.attempts, attempts_left, min_classes,
                              tally.rejected_nodata, view)


def _fail_if_hopeless(name, want, got, used, attempts_left, min_classes, rejected_nodata, view):
    """ChipError when even an optimistic acceptance rate can't give `want` chips in the budget.

    Optimistic rate: (accepted + 3 sqrt(accepted) + 3) / draws, about three standard errors above
    the observed rate (and the 'rule of three' bound when nothing was accepted yet), so a request
    that could still succeed is almost never stopped. Only on failure is the region itself looked
    at (`view`, its native codes): a region holding fewer classes than `min classes` can never
    give such a chip, which the message then says instead of a rate.
    """
    if used < FAIL_FAST_MIN_ATTEMPTS:
        return
    optimistic_rate = (got + 3 * math.sqrt(got) + 3) / used
    needed = (want - got) / optimistic_rate
    if needed <= attempts_left - used:
        return
    codes = np.flatnonzero(np.bincount(view.ravel(), minlength=256))  # native codes present
    present = {int(c) for c in NATIVE_TO_COLLAPSED_ID[codes] if c < NUM_CLASSES}
    if len(present) < min_classes:
        error = ChipError(
            f"'{name}' holds only {len(present)} land-cover class{'' if len(present) == 1 else 'es'} "
            f"in all, so no chip from it can have at least {min_classes} land-cover classes. "
            f"Lower 'min classes' to "
            f"{max(len(present), 1)} or less, or choose a region with more varied land cover.")
        error.attempts = used
        raise error
    why = (f" and at most {MAX_CHIP_NODATA_FRACTION:.0%} no-data ({rejected_nodata:,} draws had "
           "more no-data: sea or outside coverage)") if rejected_nodata else ""
    found = (f"none of {used:,} random draws in '{name}'" if got == 0 else
             f"after {used:,} random draws in '{name}' only {got} of the {want} chips wanted there")
    estimate = (f"At that rate the {want - got} still missing would need about {needed:,.0f} more "
                f"draws, beyond the {attempts_left - used:,} left" if got else
                f"Even at an optimistic rate the {want} chips wanted would need more than the "
                f"{attempts_left - used:,} draws left")
    advice = ("Ask for fewer chips, lower 'min classes', or choose a region with more land (less "
              "sea) or more varied land cover." if rejected_nodata else
              "Ask for fewer chips, lower 'min classes', or choose a region with more varied land "
              "cover.")
    error = ChipError(
        f"Stopped early: {found} had at least {min_classes} land-cover classes{why}. {estimate} "
        f"({ATTEMPTS_PER_CHIP} per chip, as the notebook). {advice}")
    error.attempts = used
    raise error


def _draw_origins(rng, high_r, high_c, n) -> np.ndarray:
    """n (row, col) draws, in the notebook's order: row then col, one pair per attempt."""
    if high_r == high_c:  # one vector draw gives the same numbers as 2n scalar draws
        return rng.integers(0, high_r, size=2 * n).reshape(n, 2)
    return np.array([[rng.integers(0, high_r), rng.integers(0, high_c)] for _ in range(n)],
                    dtype=np.int64).reshape(n, 2)


def iter_chips(native_rois, regions, n, chip_size, min_classes, seed, roi_names,
               progress: Callable[[int, int], None] | None = None,
               tally: SamplingTally | None = None):
    """n chips from `regions` in round-robin shares (the notebook's WorldCoverChipDataset),
    drawn region after region with one seeded generator -> yields (roi index, K x S x S uint8
    collapsed chips, K x 2 int64 origins) batches in chip order, each at most CHUNK_BYTES of
    pixels, so a consumer that writes them out holds one batch (chips.sample_chips and
    chipstore.build_store both cut chips through this function, so they are the same chips).

    ChipError when the chips can't be built (also early, once the request is clearly hopeless).
    `progress(done, n)` reports the chips accepted so far; `tally` counts draws and no-data
    rejections.
    """
    if n < 1:
        raise ChipError("Ask for at least one chip.")
    tally = SamplingTally() if tally is None else tally
    rng = np.random.default_rng(seed)
    want = [n // len(regions)] * len(regions)
    for i in range(n - sum(want)):
        want[i] += 1
    attempts_left, done = n * ATTEMPTS_PER_CHIP, 0
    for region, k in zip(regions, want):
        name = roi_names[region.roi_index]
        report = None if progress is None else (lambda got, done=done: progress(done + got, n))
        region_tally = SamplingTally()
        got = 0
        for chips, origins in _region_chunks(native_rois[region.roi_index], region, k, chip_size,
                                             min_classes, rng, attempts_left, name, report,
                                             region_tally):
            got += len(chips)
            yield region.roi_index, chips, origins
        attempts_left -= region_tally.attempts
        tally.attempts += region_tally.attempts
        tally.rejected_nodata += region_tally.rejected_nodata
        if got < k:
            raise ChipError(
                f"Only {got} of {k} chips in '{name}' have at least {min_classes} "
                f"land-cover classes" + (f" and at most {MAX_CHIP_NODATA_FRACTION:.0%} no-data"
                                         if region_tally.rejected_nodata else "")
                + ". Lower 'min classes' or choose a more varied region.")
        done += k


def sample_chips(native_rois, regions, n, chip_size, patch_size, min_classes, seed, roi_names,
                 progress: Callable[[int, int], None] | None = None,
                 bands: tuple[str, ...] = PALETTE_BANDS, roi_pixels: list | None = None):
    """n chips from `regions` in round-robin (iter_chips, gathered in memory) -> ChipSet.

    Chips follow the no-data rule of this module's docstring. ChipError when the chips can't be
    built (also early, once the request is clearly hopeless). `progress(done, n)` reports the
    chips accepted so far after every batch of draws. `roi_pixels`: each ROI's C x H x W values
    of `bands` (a source with its own pixels), cut at the same origins as the labels.
    """
    if chip_size % patch_size:
        raise ChipError(f"Chip size {chip_size} is not a multiple of the patch size {patch_size}.")
    tally = SamplingTally()
    labels, roi_index, all_origins = [], [], []
    for k, chips, origins in iter_chips(native_rois, regions, n, chip_size, min_classes, seed,
                                        roi_names, progress, tally):
        labels.append(chips)
        roi_index += [k] * len(chips)
        all_origins += origins.tolist()
    labels = np.concatenate(labels)
    pixels = None
    if roi_pixels is not None:
        pixels = np.empty((len(labels), len(bands), chip_size, chip_size), np.float32)
        for j, (k, (r, c)) in enumerate(zip(roi_index, all_origins)):
            pixels[j] = roi_pixels[k][:, r:r + chip_size, c:c + chip_size]
    return ChipSet(
        labels=labels,
        patch_labels=patch_mode_labels(labels, patch_size),
        roi_index=np.array(roi_index, dtype=np.int64),
        origins=np.array(all_origins, dtype=np.int64).reshape(-1, 2),
        roi_names=list(roi_names),
        chip_size=chip_size,
        patch_size=patch_size,
        rejected_nodata=tally.rejected_nodata,
        bands=bands,
        pixels=pixels,
    )


def split_regions(roi_shapes, roi_names, holdout_roi=None, holdout_block=None):
    """-> (training regions, held-out regions). Held-out pixels never fall in a training region."""
    full = [SamplingRegion(i, 0, 0, h, w) for i, (h, w) in enumerate(roi_shapes)]
    if holdout_roi is None:
        return full, []
    if holdout_roi not in roi_names:
        raise ChipError(f"No region called '{holdout_roi}' to hold out. Choose one of {roi_names}.")
    k = roi_names.index(holdout_roi)
    h, w = roi_shapes[k]
    if holdout_block is None:
        if len(roi_names) < 2:
            raise ChipError("Holding out the only region leaves nothing to train on. "
                            "Hold out one half of it instead, or add another region.")
        return [r for r in full if r.roi_index != k], [full[k]]
    if holdout_block not in HOLDOUT_BLOCKS:
        raise ChipError(f"Held-out block must be one of {HOLDOUT_BLOCKS}, not '{holdout_block}'.")
    halves = {
        "north": (SamplingRegion(k, 0, 0, h // 2, w), SamplingRegion(k, h // 2, 0, h - h // 2, w)),
        "south": (SamplingRegion(k, h // 2, 0, h - h // 2, w), SamplingRegion(k, 0, 0, h // 2, w)),
        "west": (SamplingRegion(k, 0, 0, h, w // 2), SamplingRegion(k, 0, w // 2, h, w - w // 2)),
        "east": (SamplingRegion(k, 0, w // 2, h, w - w // 2), SamplingRegion(k, 0, 0, h, w // 2)),
    }
    held, kept = halves[holdout_block]
    train = [kept if r.roi_index == k else r for r in full]
    return train, [held]


@dataclass(frozen=True)
class SplitPlan:
    """One split's sampling: its regions, chips wanted, seed, and its first chip's place in the
    progress count over all splits."""

    name: str  # "train" or "heldout"
    regions: list
    n: int
    seed: int
    offset: int


@dataclass(frozen=True)
class SamplingPlan:
    """What build_chip_sets cuts from which ROIs, checked before any draw (plan_chips)."""

    names: list[str]
    natives: list  # each ROI's H x W native WorldCover codes
    bands: tuple[str, ...]
    roi_pixels: list | None  # each ROI's C x H x W values of `bands`, or None (palette RGB)
    splits: tuple[SplitPlan, ...]  # training first, then the held-out chips if any

    @property
    def total(self) -> int:
        return sum(s.n for s in self.splits)


def plan_chips(rois, config: ChipConfig) -> SamplingPlan:
    """ROIs (objects with .spec.name and .native) and chip settings -> the checked SamplingPlan:
    the training regions (seed config.seed) and the held-out ones (seed config.seed + 1).
    ChipError for no ROI, ROIs not read from the chips' source, or a bad held-out choice."""
    if not rois:
        raise ChipError("There are no regions to cut chips from: choose at least one region first.")
    bands = pixel_source(config.source).bands
    roi_pixels = None
    if bands != PALETTE_BANDS:  # a source with its own pixels (Sentinel-2 regions: .pixels)
        roi_pixels = [getattr(r, "pixels", None) for r in rois]
        if any(p is None or tuple(getattr(r, "bands", ())) != bands
               for p, r in zip(roi_pixels, rois)):
            raise ChipError(f"All regions must be read from the chips' source "
                            f"({pixel_source(config.source).label}, bands {' '.join(bands)}): "
                            "read the regions again from that source.")
    elif any(getattr(r, "pixels", None) is not None for r in rois):
        raise ChipError("Some regions hold Sentinel-2 pixels, not WorldCover palette RGB: choose "
                        "their source for the chips, or read the regions again as WorldCover.")
    names = [r.spec.name for r in rois]
    natives = [r.native for r in rois]
    train_regions, held_regions = split_regions([a.shape for a in natives], names,
                                                config.holdout_roi, config.holdout_block)
    splits = [SplitPlan("train", train_regions, config.n_chips, config.seed, 0)]
    if held_regions:
        splits.append(SplitPlan("heldout", held_regions, config.n_holdout_chips,
                                config.seed + 1, config.n_chips))
    return SamplingPlan(names, natives, bands, roi_pixels, tuple(splits))


def build_chip_sets(rois, config: ChipConfig,
                    progress: Callable[[int, int], None] | None = None) -> tuple[ChipSet, ChipSet | None]:
    """ROIs (objects with .spec.name and .native) -> (training chips, held-out chips or None).
    ChipError for more than MAX_IN_MEMORY_CHIPS training chips (a chip store takes more).

    `progress(done, total)`: chips accepted so far over all chips wanted (training + held-out).
    """
    plan = plan_chips(rois, config)
    if config.n_chips > MAX_IN_MEMORY_CHIPS:
        grid = config.chip_size // config.patch_size  # labels 1 B, patch labels 8 B, origin 24 B
        need = plan.total * (config.chip_size ** 2 + grid * grid * 8 + 24) / 1e9
        raise ChipError(f"{config.n_chips:,} training chips are more than the "
                        f"{MAX_IN_MEMORY_CHIPS:,} this lab cuts in memory (about {need:,.1f} GB). "
                        "Cut them into a chip store on disk (python -m bharateo chips build "
                        "--out DIR ...) and train from it (python -m bharateo train --chips-dir "
                        "DIR).")
    sets = [sample_chips(plan.natives, split.regions, split.n, config.chip_size,
                         config.patch_size, config.min_classes, split.seed, plan.names,
                         progress and (lambda done, _n, o=split.offset: progress(o + done,
                                                                                 plan.total)),
                         plan.bands, plan.roi_pixels)
            for split in plan.splits]
    train, held = sets[0], (sets[1] if len(sets) > 1 else None)
    if plan.roi_pixels is not None:  # normalise by the training chips' statistics, held-out too
        step = 64  # chips per batch of the float64 sums
        train.band_stats = band_stats(((train.pixels[i:i + step],
                                        train.labels[i:i + step] != NODATA_ID)
                                       for i in range(0, len(train), step)), plan.bands)
        if held is not None:
            held.band_stats = train.band_stats
    return train, held


def tokens_for(model, chips: ChipSet, index=slice(None)) -> torch.Tensor:
    """Chips `index` as the tokens `model` reads: pixel values normalised with the statistics
    the model was trained with (`model.band_stats`, a declared field of every model variant, set
    by train() and, from config.json, by runs.load_model) when it has them, else with the
    chips' own."""
    return chips.tokens(index, model.band_stats)
