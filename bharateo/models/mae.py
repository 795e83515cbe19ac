"""The `mae` variant: an encoder that sees only the visible patches, and a light decoder.

He et al. 2021 ("Masked Autoencoders Are Scalable Vision Learners", facebookresearch/mae
`models_mae.py`): the encoder runs over the visible tokens only (at mask ratio 0.75, 16 of 64),
with their position embeddings and no mask tokens; a light decoder (its own, smaller width and
depth) then places a learned mask token in every hidden place, adds decoder position
embeddings, and runs over all N tokens. At the notebook's sizes this is about 2.5x fewer FLOPs
per chip than the notebook model, whose encoder runs over all 64 tokens, 48 of them mask tokens
that carry no information (flops_per_chip; bench/speed.py measures the speed, docs/speed.md).

Heads. The pixel head reads the decoder output of the hidden tokens only (what the loss scores,
SmoothL1 beta 0.1 as the notebook). The patch-class head reads the decoder output of EVERY
token: the encoder never sees a hidden token, so only the decoder has a feature for all N
positions, and Evaluate and the confusion matrix need a class for all 64. Visible tokens reach
it through the encoder (their decoder input is the projected encoder output), hidden ones
through the decoder's attention to the visible ones, as in the notebook model, where hidden
tokens are classified from context too.

Same contract as every variant (bharateo/models/registry.py): forward, training_losses (the
notebook's losses and metrics, scored_losses), parameter_count, flops_per_chip, layer_count.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from bharateo.data.reflectance import BandStats
from bharateo.models.notebook import ModelConfig, encoder_layers, grid_attention, run_layers, scored_losses
from bharateo.models.sizes import SIZES


class MaskedAutoencoder(nn.Module):
    """Visible-only encoder (embed_dim, depth, heads) -> light decoder over all tokens
    (decoder_dim, decoder_depth, decoder_heads) -> pixel head (hidden tokens) and patch-class
    head (every token)."""

    band_stats: BandStats | None = None  # its input's normalisation: see TinyRGBMAE.band_stats

    def __init__(self, config: ModelConfig = ModelConfig(arch="mae")):
        super().__init__()
        self.config = config.validate()
        d, dd, n = config.embed_dim, config.decoder_dim, config.num_patches
        self.patch_embed = nn.Linear(config.token_dim, d)
        self.pos_embed = nn.Parameter(torch.zeros(1, n, d))
        self.encoder = encoder_layers(d, config.heads, config.depth)
        self.encoder_norm = nn.LayerNorm(d)  # MAE's final encoder norm (the layers are pre-norm)
        self.decoder_embed = nn.Linear(d, dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dd))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, n, dd))
        self.decoder = encoder_layers(dd, config.decoder_heads, config.decoder_depth)
        self.pixel_head = nn.Sequential(nn.LayerNorm(dd), nn.Linear(dd, config.token_dim))
        self.patch_head = nn.Sequential(nn.LayerNorm(dd), nn.Linear(dd, config.num_classes))
        # the notebook's initialisation of positions and mask token (learned, trunc-normal 0.02)
        for p in (self.pos_embed, self.mask_token, self.decoder_pos_embed):
            nn.init.trunc_normal_(p, std=0.02)

    def encode(self, tokens: torch.Tensor, mask: torch.Tensor,
               weights: list | None = None) -> torch.Tensor:
        """B x N x T tokens, B x N mask (True = hidden, the same count in every row, as
        random_patch_mask makes) -> B x V x D features of the V visible tokens, in position
        order. Hidden tokens' pixels are never read. ValueError if rows hide different counts."""
        b, n, _ = tokens.shape
        visible = ~mask
        v = int(visible[0].sum())
        if not bool((visible.sum(dim=1) == v).all()):
            raise ValueError("every chip in a batch must hide the same number of patches")
        x = self.patch_embed(tokens[visible]) + self.pos_embed.expand(b, -1, -1)[visible]  # BV x D
        return self.encoder_norm(run_layers(self.encoder.layers, x.reshape(b, v, -1),
                                            self.config.heads, weights))

    def decode(self, latent: torch.Tensor, mask: torch.Tensor,
               weights: list | None = None) -> torch.Tensor:
        """B x V x D visible features, B x N mask -> B x N x decoder_dim: the mask token in every
        hidden place, decoder positions added, decoder layers over all N tokens."""
        b, n = mask.shape
        z = self.mask_token.expand(b, n, -1).clone()
        z[~mask] = self.decoder_embed(latent).reshape(-1, z.shape[-1]).to(z.dtype)  # autocast
        return run_layers(self.decoder.layers, z + self.decoder_pos_embed,
                          self.config.decoder_heads, weights)

    def features(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """B x N x T, B x N -> B x N x decoder_dim, what both heads read. Rows hiding different
        numbers of patches are run one by one (random_patch_mask never makes such a batch)."""
        counts = mask.sum(dim=1)
        if bool((counts == counts[0]).all()):
            return self.decode(self.encode(tokens, mask), mask)
        return torch.cat([self.features(tokens[i:i + 1], mask[i:i + 1]) for i in range(len(mask))])

    @torch.no_grad()
    def attention_weights(self, tokens: torch.Tensor, mask: torch.Tensor) -> dict:
        """What each token attends to (the "Inside the model" page): the encoder's layers over
        the visible tokens, placed on the full grid (bharateo.models.notebook.grid_attention: hidden
        patches' rows and columns are zero, and `queries` says the encoder never computed them),
        then the decoder's layers over all N tokens, where a hidden patch looks at the visible
        ones to be filled in. tokens B x N x T, mask B x N (the same count hidden in every row)
        -> {"weights": L x B x H x N x N, "layers": L names, "queries": L x B x N bool,
        "heads": L head counts}. The decoder may have another head count than the encoder: the
        maps are padded with zero heads to the larger count. Same maths as forward()."""
        b, n = mask.shape
        enc: list[torch.Tensor] = []
        dec: list[torch.Tensor] = []
        self.decode(self.encode(tokens, mask, enc), mask, dec)
        positions = (~mask).nonzero(as_tuple=True)[1].reshape(b, -1)  # B x V, in grid order
        maps = [grid_attention(w, positions, n) for w in enc] + dec
        counts = [w.shape[1] for w in maps]
        maps = [torch.cat([w, w.new_zeros(b, max(counts) - w.shape[1], n, n)], dim=1) for w in maps]
        queries = [~mask] * len(enc) + [torch.ones_like(mask)] * len(dec)
        return {"weights": torch.stack(maps), "heads": counts,
                "layers": [f"encoder layer {i + 1}" for i in range(len(enc))]
                + [f"decoder layer {i + 1}" for i in range(len(dec))],
                "queries": torch.stack(queries)}

    @torch.no_grad()
    def token_embeddings(self, tokens: torch.Tensor) -> torch.Tensor:
        """B x N x T tokens, nothing hidden -> B x N x D: the encoder's output (after its final
        norm) for every token, what the embedding map projects."""
        return self.encode(tokens, torch.zeros(tokens.shape[:2], dtype=torch.bool,
                                               device=tokens.device))

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor):
        """B x N x T tokens, B x N mask -> (B x N x T pixel predictions, B x N x K class logits)."""
        z = self.features(tokens, mask)
        return self.pixel_head(z), self.patch_head(z)

    def training_losses(self, tokens, patch_labels, mask, patch_loss_weight: float,
                        class_weights=None) -> dict:
        """tokens B x N x T, patch_labels B x N, mask B x N -> the notebook's losses and metrics
        (bharateo.models.notebook.scored_losses): pixel head on hidden tokens, class head on all N.
        `class_weights`: see scored_losses."""
        return scored_losses(tokens, patch_labels, mask, self.features(tokens, mask),
                             self.pixel_head, self.patch_head, patch_loss_weight, class_weights)

    # the variant's arithmetic, without building it (bharateo/models/sizes.py)
    check_config = staticmethod(SIZES["mae"].check_config)
    parameter_count = staticmethod(SIZES["mae"].parameter_count)
    layer_count = staticmethod(SIZES["mae"].layer_count)
    flops_per_chip = staticmethod(SIZES["mae"].flops_per_chip)
