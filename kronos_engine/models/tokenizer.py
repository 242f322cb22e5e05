"""KronosTokenizer: a causal transformer autoencoder with binary spherical quantisation (BSQ).

Each time step of a K-line window becomes `s1_bits + s2_bits` signs; the first `s1_bits` form
the coarse token s1, the rest the fine token s2. Attribute names follow the public code so the
public checkpoints load with `strict=True`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kronos_engine.models.io import PretrainedMixin
from kronos_engine.models.layers import (
    TransformerBlock,
    default_embed_std,
    init_weights,
    set_activation_checkpointing,
)

Ids = torch.Tensor | list[torch.Tensor] | tuple[torch.Tensor, torch.Tensor]


def _binary_entropy_terms(probs: torch.Tensor) -> torch.Tensor:
    """`-p log(p + 1e-8)` summed over the last dim, the public (unnormalised) entropy."""
    return -(probs * torch.log(probs + 1e-8)).sum(dim=-1)


class BinarySphericalQuantizer(nn.Module):
    """Sign quantiser on the unit sphere with commitment and entropy regularisers.

    `basis` and `group_basis` are persistent int64 buffers only because the public
    checkpoints contain them; nothing reads them.
    """

    def __init__(
        self,
        embed_dim: int,
        beta: float,
        gamma0: float,
        gamma: float,
        zeta: float,
        group_size: int,
    ) -> None:
        super().__init__()
        if embed_dim % group_size:
            raise ValueError(
                f"codebook dim {embed_dim} (s1_bits + s2_bits) is not divisible by "
                f"group_size {group_size}"
            )
        self.embed_dim = embed_dim
        self.beta = beta
        self.gamma0 = gamma0
        self.gamma = gamma
        self.zeta = zeta
        self.group_size = group_size
        self.num_groups = embed_dim // group_size
        self.register_buffer("basis", 2 ** torch.arange(embed_dim - 1, -1, -1, dtype=torch.long))
        self.register_buffer(
            "group_basis", 2 ** torch.arange(group_size - 1, -1, -1, dtype=torch.long)
        )

    @property
    def q_scale(self) -> float:
        return self.embed_dim**-0.5

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Signs with a straight-through gradient; 0 maps to -1 as in the public code."""
        signs = torch.where(z > 0, torch.ones_like(z), -torch.ones_like(z))
        return z + (signs - z).detach()

    def forward(
        self, z: torch.Tensor, compute_loss: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`z` is unit-norm; returns the scaled code `zq` and the BSQ loss (or None)."""
        zq = self.quantize(z) * self.q_scale
        if not compute_loss:
            return zq, None
        commit = self.beta * torch.mean(((zq.detach() - z) ** 2).sum(dim=-1))
        per_sample, codebook = self.soft_entropy_loss(z)
        penalty = self.gamma0 * per_sample - self.gamma * codebook
        return zq, commit + self.zeta * penalty

    def soft_entropy_loss(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Analytic per-sample entropy and the codebook entropy, as the public code computes them.

        The public code (from BSQ-ViT) computes a grouped soft assignment but then overwrites
        it with the per-bit probabilities `[p, 1 - p]` before averaging, so its codebook
        entropy is the sum over bits of the binary entropy of the position-averaged `p`
        (`group_size` plays no role). The reference vectors confirm this; it is kept so that
        fine-tuning optimises the same objective as the public recipe.
        """
        p = torch.sigmoid(-4 * z * self.q_scale)
        probs = torch.stack([p, 1 - p], dim=-1)
        per_sample = _binary_entropy_terms(probs).sum(-1).mean()
        avg_prob = probs.reshape(-1, self.embed_dim, 2).mean(dim=0)
        return per_sample, _binary_entropy_terms(avg_prob).sum()


class BSQuantizer(nn.Module):
    """Normalise, quantise and turn the signs into s1/s2 token ids (least significant bit first)."""

    def __init__(
        self,
        s1_bits: int,
        s2_bits: int,
        beta: float,
        gamma0: float,
        gamma: float,
        zeta: float,
        group_size: int,
    ) -> None:
        super().__init__()
        self.s1_bits = s1_bits
        self.s2_bits = s2_bits
        self.codebook_dim = s1_bits + s2_bits
        self.bsq = BinarySphericalQuantizer(
            self.codebook_dim, beta, gamma0, gamma, zeta, group_size
        )

    @staticmethod
    def bits_to_indices(bits: torch.Tensor) -> torch.Tensor:
        weights = 2 ** torch.arange(bits.shape[-1], dtype=torch.long, device=bits.device)
        return ((bits >= 0).long() * weights).sum(-1)

    def forward(
        self, z: torch.Tensor, half: bool = False, compute_loss: bool = True
    ) -> tuple[torch.Tensor | None, torch.Tensor, Ids]:
        # Losses in float32 (entropies take logs); the code goes back in the input dtype.
        dtype = z.dtype
        z = F.normalize(z.float(), dim=-1)
        quantized, bsq_loss = self.bsq(z, compute_loss=compute_loss)
        quantized = quantized.to(dtype)
        if half:
            ids: Ids = [
                self.bits_to_indices(quantized[..., : self.s1_bits]),
                self.bits_to_indices(quantized[..., self.s1_bits :]),
            ]
        else:
            ids = self.bits_to_indices(quantized)
        return bsq_loss, quantized, ids


class KronosTokenizer(PretrainedMixin):
    """Tokenizer with the public constructor keywords, module tree and methods.

    `forward(x)` returns `((z_pre, z), bsq_loss, quantized, ids)`: reconstructions from the s1
    bits only and from all bits, the BSQ loss, the scaled code and the full token ids.
    """

    def __init__(
        self,
        d_in: int,
        d_model: int,
        n_heads: int,
        ff_dim: int,
        n_enc_layers: int,
        n_dec_layers: int,
        ffn_dropout_p: float,
        attn_dropout_p: float,
        resid_dropout_p: float,
        s1_bits: int,
        s2_bits: int,
        beta: float,
        gamma0: float,
        gamma: float,
        zeta: float,
        group_size: int,
    ) -> None:
        super().__init__()
        if n_enc_layers < 1 or n_dec_layers < 1:
            raise ValueError("n_enc_layers and n_dec_layers must be >= 1")
        self._store_config(locals())
        self.d_in = d_in
        self.d_model = d_model
        self.n_heads = n_heads
        self.ff_dim = ff_dim
        self.enc_layers = n_enc_layers
        self.dec_layers = n_dec_layers
        self.ffn_dropout_p = ffn_dropout_p
        self.attn_dropout_p = attn_dropout_p
        self.resid_dropout_p = resid_dropout_p
        self.s1_bits = s1_bits
        self.s2_bits = s2_bits
        self.codebook_dim = s1_bits + s2_bits
        self.beta, self.gamma0, self.gamma, self.zeta = beta, gamma0, gamma, zeta
        self.group_size = group_size

        block_args = (d_model, n_heads, ff_dim, ffn_dropout_p, attn_dropout_p, resid_dropout_p)
        self.embed = nn.Linear(d_in, d_model)
        self.head = nn.Linear(d_model, d_in)
        # The public code uses n_layers - 1 blocks on each side; the checkpoints depend on it.
        self.encoder = nn.ModuleList(TransformerBlock(*block_args) for _ in range(n_enc_layers - 1))
        self.decoder = nn.ModuleList(TransformerBlock(*block_args) for _ in range(n_dec_layers - 1))
        self.quant_embed = nn.Linear(d_model, self.codebook_dim)
        self.post_quant_embed_pre = nn.Linear(s1_bits, d_model)
        self.post_quant_embed = nn.Linear(self.codebook_dim, d_model)
        self.tokenizer = BSQuantizer(s1_bits, s2_bits, beta, gamma0, gamma, zeta, group_size)
        init_weights(self, default_embed_std(d_model))

    def set_activation_checkpointing(self, enabled: bool) -> None:
        """Trade compute for memory in training: recompute blocks in the backward pass."""
        set_activation_checkpointing(self, enabled)

    def _latent(self, x: torch.Tensor) -> torch.Tensor:
        z = self.embed(x)
        for layer in self.encoder:
            z = layer(z)
        return self.quant_embed(z)

    def _reconstruct(self, z: torch.Tensor) -> torch.Tensor:
        for layer in self.decoder:
            z = layer(z)
        return self.head(z)

    def forward(
        self, x: torch.Tensor
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]:
        bsq_loss, quantized, ids = self.tokenizer(self._latent(x))
        z_pre = self._reconstruct(self.post_quant_embed_pre(quantized[..., : self.s1_bits]))
        z = self._reconstruct(self.post_quant_embed(quantized))
        return (z_pre, z), bsq_loss, quantized, ids

    def encode(self, x: torch.Tensor, half: bool = False) -> Ids:
        """Token ids of `x` (B, L, d_in): `[s1_ids, s2_ids]` with `half`, else full ids."""
        _, _, ids = self.tokenizer(self._latent(x), half=half, compute_loss=False)
        return ids

    def indices_to_bits(self, x: Ids, half: bool = False) -> torch.Tensor:
        """Rebuild the scaled code `+-1/sqrt(D)` from ids (bits least significant first).

        With `half` the s1 part has `s1_bits` bits and the s2 part `s2_bits` bits (the public
        code used `D // 2` for both, which is only right for equal halves).
        """
        if half:
            s1_ids, s2_ids = x
            bits = torch.cat([_id_bits(s1_ids, self.s1_bits), _id_bits(s2_ids, self.s2_bits)], -1)
        else:
            if not isinstance(x, torch.Tensor):
                raise TypeError("decode(..., half=False) expects one id tensor")
            bits = _id_bits(x, self.codebook_dim)
        return (bits.float() * 2 - 1) * (self.codebook_dim**-0.5)

    def decode(self, x: Ids, half: bool = False) -> torch.Tensor:
        """Reconstruct `(B, L, d_in)` from ids through `post_quant_embed` and the decoder."""
        bits = self.indices_to_bits(x, half).to(self.post_quant_embed.weight.dtype)
        return self._reconstruct(self.post_quant_embed(bits))


def _id_bits(ids: torch.Tensor, n_bits: int) -> torch.Tensor:
    mask = 2 ** torch.arange(n_bits, device=ids.device, dtype=torch.long)
    return (ids.long().unsqueeze(-1) & mask) != 0
