"""The notebook's TinyRGBMAE: masked palette-RGB token regression plus an ESA patch-class head.

Parameters are laid out exactly as in the notebook (nn.TransformerEncoder of pre-norm GELU
layers, the same names, the same initialisation), so a notebook state_dict loads unchanged. The
forward pass is written out by hand because that is where the time goes on a laptop CPU:
  - patch embedding runs on visible tokens only (masked ones are replaced by the mask token
    anyway, so their embeddings and gradients are zero work in the notebook too),
  - attention is two small batched matmuls (the fused CPU flash kernel is slow at 64 tokens),
  - in training the pixel head runs on masked tokens only (the loss sees nothing else).
Same model, same maths, fewer wasted FLOPs; tests check it against the notebook's module.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from bharateo.errors import ConfigError
from bharateo.data.reflectance import BandStats
from bharateo.models.masking import check_mask_ratio, num_masked  # noqa: F401 (re-exported)
from bharateo.models.sizes import SIZES, variant_sizes
from bharateo.config.schema import check_types
from bharateo.config.settings import check_settings, setting
from bharateo.data.worldcover import IGNORE_INDEX


MAX_PATCHES = 4096  # tokens per chip (attention is N x N)
MAX_PARAMETERS = 50_000_000  # the UI's largest model (embed 256 x depth 8) has ~6.6M


def _variant_names() -> tuple[str, ...]:
    return tuple(SIZES)  # the registry's names (bharateo/models/registry.py checks they match)


@dataclass(frozen=True)
class ModelConfig:
    """A model's architecture: which variant (`arch`, a name in bharateo/models/registry.py) and
    its sizes, each declared once (bharateo/config/settings.py). Every size has bounds, so a config from
    disk or the CLI never allocates more than this lab allows. `img_size`, `patch_size` and
    `in_chans` follow the chips (RunConfig sets them), so they have no flag or knob. The
    decoder_* sizes belong to the `mae` variant's light decoder (bharateo/models/mae.py); the
    notebook model ignores them, and runs saved before they existed load with these defaults
    (64 / 1 / 4: measured with bench/speed.py, docs/speed.md)."""

    # runs saved before variants existed have no key: the notebook's model
    arch: str = setting("notebook", label="model variant", choices=_variant_names,
                        aliases=("--model",),  # issue 13's
                        help="the architecture, by its name in bharateo/models/registry.py")
    img_size: int = setting(128, label="img size", bounds=(1, 1024), flag=False,
                            help="chip size in pixels (set from the chips)")
    patch_size: int = setting(16, label="patch size", bounds=(1, 64), flag=False,
                              help="patch size in pixels (set from the chips)")
    in_chans: int = setting(3, label="input bands", bounds=(1, 16), flag=False,
                            commands={"tokens": "--channels"},
                            help="input bands per pixel (a run takes it from its chips)")
    embed_dim: int = setting(128, label="embed dim", bounds=(1, 1024),
                             help="width of every token inside the encoder")
    depth: int = setting(3, label="depth (layers)", bounds=(1, 32),
                         help="transformer encoder layers")
    heads: int = setting(4, label="heads", bounds=(1, 64),
                         help="attention heads per layer (they must divide the embed dim)")
    num_classes: int = setting(8, label="num classes", bounds=(1, 256), flag=False,
                               help="ESA patch classes the class head predicts")
    decoder_dim: int = setting(64, label="decoder dim", bounds=(1, 1024),
                               help="mae only: the light decoder's token width")
    decoder_depth: int = setting(1, label="decoder depth", bounds=(1, 32),
                                 help="mae only: the light decoder's transformer layers")
    decoder_heads: int = setting(4, label="decoder heads", bounds=(1, 64),
                                 help="mae only: attention heads per decoder layer (they must "
                                      "divide the decoder dim)")

    @property
    def grid_size(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size ** 2

    @property
    def token_dim(self) -> int:
        return self.in_chans * self.patch_size ** 2

    def for_chips(self, chip_size: int, patch_size: int,
                  bands: tuple[str, ...] | None) -> "ModelConfig":
        """This architecture reading chips of `chip_size` px cut into `patch_size` px patches,
        one input channel per band of `bands` (the chips' band list, in channel order; None:
        keep in_chans, for a source validate() will refuse). The one place the input shape
        follows the chips: RunConfig builds its model config with it."""
        in_chans = self.in_chans if bands is None else len(bands)
        return replace(self, img_size=chip_size, patch_size=patch_size, in_chans=in_chans)

    def validate(self) -> "ModelConfig":
        """Types, bounds and shape rules, checked before any tensor is allocated.

        Raises ConfigError: a field of the wrong type (embed_dim "64" or 64.0), a size outside
        its declared bounds, an image size that isn't a multiple of the patch size, an embed dim not
        divisible by the heads, or more than MAX_PARAMETERS parameters.
        """
        check_types(self, "model")
        variant = variant_sizes(self.arch)  # its message names the known variants
        check_settings(self, "model", "Model: ")
        if self.img_size % self.patch_size:
            raise ConfigError(f"Image size {self.img_size} must be a multiple of patch size "
                              f"{self.patch_size}.")
        if self.embed_dim % self.heads:
            raise ConfigError(f"Embed dim {self.embed_dim} must be divisible by the number of "
                              f"heads {self.heads} (try {self.heads * 32} or fewer heads).")
        variant.check_config(self)  # rules of the variant's own sizes (e.g. its decoder)
        if self.num_patches > MAX_PATCHES:
            raise ConfigError(f"{self.num_patches} patches per chip is too many (at most "
                              f"{MAX_PATCHES}): use larger patches or smaller chips.")
        if (count := variant.parameter_count(self)) > MAX_PARAMETERS:
            raise ConfigError(f"This model would have {count / 1e6:,.1f}M parameters; this lab "
                              f"allows at most {MAX_PARAMETERS / 1e6:.0f}M. Use a smaller embed "
                              "dim or fewer layers.")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


def random_patch_mask(batch_size: int, num_patches: int, mask_ratio: float,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """B x N bool, True = masked. Exactly num_masked(...) tokens masked in every row."""
    noise = torch.rand(batch_size, num_patches, generator=generator)
    ids = noise.argsort(dim=1)
    mask = torch.zeros(batch_size, num_patches, dtype=torch.bool)
    mask.scatter_(1, ids[:, :num_masked(num_patches, mask_ratio)], True)
    return mask


def attention(layer: nn.TransformerEncoderLayer, h: torch.Tensor, heads: int,
              weights: list | None = None) -> torch.Tensor:
    """Multi-head self-attention with `layer`'s own weights, as two small batched matmuls (the
    fused CPU flash kernel is slower at 16-64 tokens). B x N x D -> B x N x D. `weights` (a
    list) receives the softmax, B x H x N x N (rows sum to 1): only when asked, never in training."""
    b, n, d = h.shape
    qkv = F.linear(h, layer.self_attn.in_proj_weight, layer.self_attn.in_proj_bias)
    q, k, v = qkv.reshape(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)  # B x H x N x d/H
    scores = (q * (d // heads) ** -0.5) @ k.transpose(-2, -1)  # B x H x N x N
    probs = scores.softmax(dim=-1)
    if weights is not None:
        weights.append(probs.detach())
    out = probs @ v  # B x H x N x d/H
    return layer.self_attn.out_proj(out.transpose(1, 2).reshape(b, n, d))


def run_layers(layers, z: torch.Tensor, heads: int, weights: list | None = None) -> torch.Tensor:
    """B x N x D -> B x N x D through nn.TransformerEncoderLayer pre-norm GELU layers
    (x + attn(norm1(x)); x + ff(norm2(x))), as nn.TransformerEncoder computes them.
    `weights`: see attention()."""
    for layer in layers:
        z = z + attention(layer, layer.norm1(z), heads, weights)
        z = z + layer.linear2(F.gelu(layer.linear1(layer.norm2(z))))
    return z


def grid_attention(weights: torch.Tensor, positions: torch.Tensor, n: int) -> torch.Tensor:
    """Attention among a subset of tokens placed on the full grid: B x H x V x V weights of the
    tokens at `positions` (B x V grid indices) -> B x H x N x N, zero in the rows and columns of
    tokens that were not in the subset (a visible-only encoder's hidden patches)."""
    b, h, v, _ = weights.shape
    full = weights.new_zeros(b, h, n, n)
    rows = positions[:, None, :, None].expand(b, h, v, v)
    cols = positions[:, None, None, :].expand(b, h, v, v)
    return full.index_put_((torch.arange(b)[:, None, None, None], torch.arange(h)[None, :, None, None],
                            rows, cols), weights)


def encoder_layers(width: int, heads: int, depth: int) -> nn.TransformerEncoder:
    """The notebook's layer stack: `depth` pre-norm GELU layers, feed-forward 4 x width, no
    dropout (its parameter names are what a notebook state_dict holds)."""
    layer = nn.TransformerEncoderLayer(d_model=width, nhead=heads, dim_feedforward=4 * width,
                                       dropout=0.0, activation="gelu", batch_first=True,
                                       norm_first=True)
    # enable_nested_tensor=False: the notebook got the same (with a warning) via norm_first.
    return nn.TransformerEncoder(layer, num_layers=depth, enable_nested_tensor=False)


def scored_losses(tokens: torch.Tensor, patch_labels: torch.Tensor, mask: torch.Tensor,
                  features: torch.Tensor, pixel_head: nn.Module, patch_head: nn.Module,
                  patch_loss_weight: float, class_weights: torch.Tensor | None = None) -> dict:
    """The notebook's losses and metrics from per-token features; shared by every variant.

    tokens B x N x T, patch_labels B x N, mask B x N (True = hidden), features B x N x F (what
    the two heads read) -> dict of 0-d float32 tensors: loss = rec + weight x esa; rec =
    SmoothL1 (beta 0.1, the notebook's) on hidden tokens, the pixel head run on those only;
    esa = cross-entropy over every token; rec_mae = mean |error| on hidden tokens; esa_acc =
    patch accuracy. Patches labelled IGNORE_INDEX (mostly no-data, see bharateo/data/chips.py) are
    left out of all four; a batch without them runs exactly the notebook's computation. Head
    outputs are cast to float32 first, so the losses are fp32 under bf16 autocast too (a no-op
    at fp32).
    `class_weights` (K floats, train.class_weights; None: the notebook's unweighted loss): esa
    is then the weighted mean sum_i w[y_i] CE_i / sum_i w[y_i] (torch's cross_entropy `weight`),
    so a rare class's patches count more; esa_acc stays the plain share of patches right.
    Also returns "confusion": the batch's K x K int64 counts (row target, column predicted) of
    valid patches, not a loss: the training loop sums it into the epoch's balanced accuracy.
    """
    logits = patch_head(features).float()  # B x N x K
    valid = patch_labels != IGNORE_INDEX
    if bool(valid.all()):
        scored, labels, flat_logits = mask, patch_labels, logits
    else:
        scored, labels, flat_logits = mask & valid, patch_labels[valid], logits[valid]
    pred = pixel_head(features[scored]).float()  # M x T
    target = tokens[scored]
    nothing = features.float().sum() * 0.0  # a zero loss that still backpropagates (all no-data)
    rec = F.smooth_l1_loss(pred, target, beta=0.1) if len(target) else nothing
    k = logits.shape[-1]
    weight = None if class_weights is None else class_weights.to(logits.device, torch.float32)
    esa = (F.cross_entropy(flat_logits.reshape(-1, k), labels.reshape(-1), weight=weight)
           if len(labels) else nothing)
    with torch.no_grad():
        mae = (pred - target).abs().mean() if len(target) else torch.zeros((), device=tokens.device)
        guess = flat_logits.argmax(dim=-1)
        acc = ((guess == labels).float().mean() if len(labels)
               else torch.zeros((), device=tokens.device))
        confusion = torch.bincount((labels * k + guess).reshape(-1), minlength=k * k).reshape(k, k)
    return {"loss": rec + patch_loss_weight * esa, "rec": rec, "esa": esa,
            "rec_mae": mae, "esa_acc": acc, "confusion": confusion}


class TinyRGBMAE(nn.Module):
    """Linear patch embed + mask token + learned positions -> pre-norm transformer encoder ->
    pixel head (C*p*p per token) and patch-class head (num_classes per token)."""

    # the per-band normalisation of its input (reflectance runs; None: palette RGB, read as it
    # is): set by train() from the training chips, saved with the run (runs.save_run writes
    # config.json "band_stats") and read back typed by runs.load_model. Not a weight.
    band_stats: BandStats | None = None

    def __init__(self, config: ModelConfig = ModelConfig()):
        super().__init__()
        self.config = config.validate()
        d = config.embed_dim
        self.patch_embed = nn.Linear(config.token_dim, d)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_patches, d))
        self.encoder = encoder_layers(d, config.heads, config.depth)
        self.pixel_head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, config.token_dim))
        self.patch_head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, config.num_classes))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def embed(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """B x N x T tokens, B x N mask -> B x N x D: visible tokens embedded, masked ones the
        mask token, plus positions. Masked tokens are never embedded."""
        b, n, _ = tokens.shape
        z = self.mask_token.expand(b, n, -1).clone()
        z[~mask] = self.patch_embed(tokens[~mask]).to(z.dtype)  # bf16 under autocast
        return z + self.pos_embed

    def attention(self, layer: nn.TransformerEncoderLayer, h: torch.Tensor,
                  weights: list | None = None) -> torch.Tensor:
        """Multi-head self-attention with the layer's own weights. B x N x D -> B x N x D."""
        return attention(layer, h, self.config.heads, weights)

    def encode(self, z: torch.Tensor, weights: list | None = None) -> torch.Tensor:
        """B x N x D -> B x N x D through the pre-norm layers (x + attn(norm(x)); x + ff(norm(x))).
        `weights`: see bharateo.models.notebook.attention."""
        return run_layers(self.encoder.layers, z, self.config.heads, weights)

    @torch.no_grad()
    def attention_weights(self, tokens: torch.Tensor, mask: torch.Tensor) -> dict:
        """What each token attends to, layer by layer (the "Inside the model" page).

        tokens B x N x T, mask B x N bool (True = hidden) -> {"weights": L x B x H x N x N
        softmax weights (query row, key column; each row sums to 1), "layers": L names,
        "queries": L x B x N bool (the queries a layer computed: here every token, since the
        notebook's encoder runs over all N, hidden ones as the mask token)}. Same maths as
        forward(); nothing is kept during training.
        """
        weights: list[torch.Tensor] = []
        self.encode(self.embed(tokens, mask), weights)
        b, n = mask.shape
        return {"weights": torch.stack(weights),
                "layers": [f"encoder layer {i + 1}" for i in range(len(weights))],
                "queries": torch.ones(len(weights), b, n, dtype=torch.bool, device=mask.device)}

    @torch.no_grad()
    def token_embeddings(self, tokens: torch.Tensor) -> torch.Tensor:
        """B x N x T tokens, nothing hidden -> B x N x D: the encoder's output for every token
        (what the embedding map projects)."""
        return self.encode(self.embed(tokens, torch.zeros(tokens.shape[:2], dtype=torch.bool,
                                                          device=tokens.device)))

    def features(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """B x N x T tokens, B x N mask -> B x N x D: what both heads read (evaluation runs the
        pixel head on the tokens it scores only, evaluate.masked_scores). In eval mode under
        torch.inference_mode the layers run through nn.TransformerEncoder itself, whose fused
        inference kernel (the same maths) took ~15 % less CPU here (bench/looking.py)."""
        z = self.embed(tokens, mask)
        if torch.is_inference_mode_enabled() and not self.training:
            return self.encoder(z)
        return self.encode(z)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor):
        """B x N x T tokens, B x N mask -> (B x N x T pixel predictions, B x N x K class logits)."""
        z = self.features(tokens, mask)
        return self.pixel_head(z), self.patch_head(z)

    # the variant's arithmetic, without building it (bharateo/models/sizes.py)
    parameter_count = staticmethod(SIZES["notebook"].parameter_count)
    layer_count = staticmethod(SIZES["notebook"].layer_count)
    flops_per_chip = staticmethod(SIZES["notebook"].flops_per_chip)
    check_config = staticmethod(SIZES["notebook"].check_config)

    def training_losses(self, tokens, patch_labels, mask, patch_loss_weight: float,
                        class_weights: torch.Tensor | None = None) -> dict:
        """One training step's losses and metrics (scored_losses), the encoder over all N tokens.

        tokens B x N x T, patch_labels B x N, mask B x N -> dict of 0-d tensors loss, rec, esa,
        rec_mae, esa_acc and the K x K confusion; the pixel head runs on masked tokens only.
        `class_weights`: see scored_losses.
        """
        z = self.encode(self.embed(tokens, mask))
        return scored_losses(tokens, patch_labels, mask, z, self.pixel_head, self.patch_head,
                             patch_loss_weight, class_weights)

