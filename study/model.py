"""A decoder-only transformer, readable in one file, holding a pack of K members.

GPT-2 style pre-LayerNorm blocks (attention + MLP with residuals).  Two ways in:
token ids through an embedding table (arithmetic) or vectors through a linear
read-in (in-context regression); two ways out: vocabulary logits or a linear read-out.

A pack is K independent models of one architecture trained side by side: every
parameter has a leading member dimension K (a linear map is ``weight [K, in, out]``,
applied with one batched matmul), and attention merges the members into the batch so
one fused kernel serves them all.  K = 1 is a single model.  Nothing mixes members:
output k depends only on member k's weights and inputs, so each member trains exactly
as it would alone (up to float rounding).  Dropout too: with per-member generators
(``model.dropout_generators``) member k draws its masks from its own stream, the masks
it would draw alone.

The position encoding is a parameter, a scheme whose record
(:mod:`study.tasks.position_schemes`) says which ids the tokens have (their index, or ids
the task computes), which table embeds them and what attention does with them:

- ``learned``:    a trained table of absolute position vectors added to the input;
- ``sinusoidal``: the fixed sin/cos table of "Attention is all you need", added;
- ``rope``:       queries and keys rotated by position-dependent angles (relative);
- ``alibi``:      a per-head linear penalty -m_h * (i - j) added to attention scores;
- ``none``:       no position signal beyond the causal mask (NoPE);
- ``coupled``, ``abacus``, ``randomized``: a trained table of ``max_position`` vectors
  indexed by position ids the *task* computes (``positions [K, B, T]``), added to the
  input.  The model does not know what the ids mean: the task assigns them (equal
  significance -> equal id for coupling, the digit's offset in its number for Abacus,
  a sorted random subset of the id range for randomized positions).
- ``coupled_alibi``, ``coupled_rope``: coupled ids and their table, and attention reads the
  ids relatively as well: ALiBi subtracts m_h * |id_q - id_k| from the scores (slopes
  :func:`id_alibi_slopes`), RoPE rotates each query and key by its token's id instead of
  its index.  Far-apart ids (pairs a short training sequence never holds) are then
  suppressed (ALiBi) or seen only through their id difference (RoPE).

Shapes: K members, B sequences each, T positions, C = d_model, H heads, hd = C / H.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from study.config import ModelConfig
from study.tasks.base import ModelIO
from study.tasks.position_schemes import position_scheme


def sinusoidal_table(n_pos: int, dim: int) -> torch.Tensor:
    """[n_pos, dim]: PE[p, 2i] = sin(p / 10000^(2i/dim)), PE[p, 2i+1] = cos(same)."""
    pos = torch.arange(n_pos, dtype=torch.float32)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    table = torch.zeros(n_pos, dim)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return table


def rope_angles(n_pos: int, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotation angles p * base^(-2i/head_dim), each [n_pos, head_dim/2]."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.arange(n_pos, dtype=torch.float32)[:, None] * inv_freq[None, :]
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x[2i], x[2i+1]) of x [B, H, T, hd] by the angle of its position."""
    x_even, x_odd = x[..., 0::2], x[..., 1::2]
    rotated = torch.stack((x_even * cos - x_odd * sin, x_even * sin + x_odd * cos), dim=-1)
    return rotated.flatten(-2).type_as(x)


def alibi_slopes(n_head: int) -> torch.Tensor:
    """Per-head slopes m_h = 2^(-8h/H), h = 1..H (the geometric sequence of ALiBi)."""
    return torch.tensor([2.0 ** (-8.0 * (h + 1) / n_head) for h in range(n_head)])


class RowSoftmax(torch.autograd.Function):
    """softmax over the last dimension, written out: y = exp(x - max x) / sum exp(x - max x),
    with the backward dx = y * (dy - sum(dy * y)).  The same function as ``Tensor.softmax``
    (to float rounding); on a CPU it runs fwd + bwd 2-3x faster on attention's short rows
    (a few dozen keys), where torch's kernel is slow, so the explicit attention path
    (dropout, attention weights) uses it there."""

    generate_vmap_rule = True  # usable under torch.func.vmap (bench/pack.py times the model that way)

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        shifted = (x - x.amax(-1, keepdim=True)).exp()
        return shifted / shifted.sum(-1, keepdim=True)

    @staticmethod
    def setup_context(ctx, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, dy: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return y * (dy - (dy * y).sum(-1, keepdim=True))


def attention_softmax(scores: torch.Tensor) -> torch.Tensor:
    """Attention weights from scores [..., T_keys]: :class:`RowSoftmax` on a CPU, torch's
    fused kernel elsewhere."""
    return scores.softmax(-1) if scores.is_cuda else RowSoftmax.apply(scores)


def id_alibi_slopes(n_head: int) -> torch.Tensor:
    """Per-head slopes over task ids: 4 for the first half of the heads, 2 for the rest.  An
    id is a digit's place, so a key one place from the query costs 2-4 and five places 10-20:
    steep on purpose.  Measured (tests/test_length_generalization.py): with a flatter head
    (slope 1/2 or less) training finds answers through far-apart ids that fail beyond the
    training length, as the id table alone does."""
    return torch.tensor([4.0 if h < (n_head + 1) // 2 else 2.0 for h in range(n_head)])


def member_view(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-member vector weight [K, C] shaped to broadcast against x [K, ..., C]."""
    return weight.view(weight.shape[0], *([1] * (x.dim() - 2)), weight.shape[1])


@dataclass
class Internals:
    """What an evaluation forward with ``return_internals=True`` exposes besides the output.

    hidden:    [K, B, T, C]        the final hidden state (after the last LayerNorm)
    layers:    n_layer x [K, B, T, C]        the residual stream after each block (before the final norm)
    attention: n_layer x [K, B, H, T, T]     each block's attention weights (rows sum to 1, causal)
    A one-member call without a member dimension has none here either.
    """

    hidden: torch.Tensor
    layers: list[torch.Tensor]
    attention: list[torch.Tensor]

    def member(self, k: int) -> "Internals":
        """Member k's internals, without the member dimension."""
        return Internals(
            hidden=self.hidden[k], layers=[x[k] for x in self.layers], attention=[w[k] for w in self.attention]
        )


class PackDropout(nn.Module):
    """Dropout of pack activations [K, ...]: zero each entry with probability p, scale the rest
    by 1 / (1 - p).  Member k's mask comes from ``generators[k]`` when the list (the model's
    ``dropout_generators``, shared by every dropout of the model) is filled, else from the
    global RNG; identity in eval mode."""

    def __init__(self, p: float, generators: list[torch.Generator]):
        super().__init__()
        self.p, self.generators = p, generators

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        # float32 even under bf16 autocast, so that an entry is kept with probability 1 - p exactly
        if not self.generators:
            uniform = torch.rand(x.shape, device=x.device)
        elif len(self.generators) != x.shape[0]:
            raise ValueError(f"{len(self.generators)} dropout generators for a pack of {x.shape[0]}")
        else:
            uniform = torch.empty(x.shape, device=x.device)
            for k, generator in enumerate(self.generators):  # member k: its own stream
                torch.rand(x.shape[1:], generator=generator, out=uniform[k])
        # in place: the uniforms become the scaled mask (1 / (1 - p) where kept, else 0); on a CPU
        # rand + compare is about twice as fast as bernoulli_
        return x * uniform.ge_(self.p).mul_(1.0 / (1.0 - self.p)).to(x.dtype)


class PackedLinear(nn.Module):
    """K independent linear maps: y[k] = x[k] @ weight[k] + bias[k]."""

    def __init__(self, n_members: int, d_in: int, d_out: int, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_members, d_in, d_out))
        self.bias = nn.Parameter(torch.zeros(n_members, 1, d_out)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        K, *rest, d_in = x.shape
        flat = x.reshape(K, -1, d_in)  # [K, N, in], N = every position of every sequence
        y = torch.bmm(flat, self.weight) if self.bias is None else torch.baddbmm(self.bias, flat, self.weight)
        return y.view(K, *rest, -1)  # [K, ..., out]


class PackedEmbedding(nn.Module):
    """K independent token tables: x[k, b, t] = weight[k, tokens[k, b, t]]."""

    def __init__(self, n_members: int, n_tokens: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_members, n_tokens, dim))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        K, V, C = self.weight.shape
        offset = torch.arange(K, device=tokens.device).view(K, *([1] * (tokens.dim() - 1))) * V
        return F.embedding(tokens + offset, self.weight.view(K * V, C))  # [K, B, T, C]


class PackedLayerNorm(nn.Module):
    """LayerNorm over the last dimension with a per-member gain and bias [K, C]."""

    def __init__(self, n_members: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n_members, dim))
        self.bias = nn.Parameter(torch.zeros(n_members, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = F.layer_norm(x, x.shape[-1:])
        return torch.addcmul(member_view(self.bias, x), normed, member_view(self.weight, x))  # bias + normed * weight


class CausalSelfAttention(nn.Module):
    # buffers (register_buffer), present with the schemes that use them
    rope_cos: torch.Tensor
    rope_sin: torch.Tensor
    id_slopes: torch.Tensor
    alibi_bias: torch.Tensor

    def __init__(
        self,
        n_members: int,
        d_model: int,
        n_head: int,
        dropout: float,
        pos_encoding: str,
        max_seq_len: int,
        generators: list[torch.Generator],
        max_position: int = 0,
    ):
        """``max_position``: the task's id range, read by attention over the task's ids (coupled_rope:
        a rotation per id)."""
        super().__init__()
        self.n_head, self.head_dim = n_head, d_model // n_head
        self.qkv = PackedLinear(n_members, d_model, 3 * d_model)
        self.proj = PackedLinear(n_members, d_model, d_model)
        self.dropout = dropout
        self.attn_dropout = PackDropout(dropout, generators)
        self.resid_dropout = PackDropout(dropout, generators)
        scheme = position_scheme(pos_encoding)
        self.attention = scheme.attention  # None, "alibi" or "rope"
        self.over_ids = scheme.task_ids  # the attention reads the task's ids, else the token indices
        if self.attention == "rope":  # one row per token index, or per task id
            cos, sin = rope_angles(max_position if self.over_ids else max_seq_len, self.head_dim)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        if self.attention == "alibi" and self.over_ids:
            self.register_buffer("id_slopes", id_alibi_slopes(n_head), persistent=False)
        if self.attention == "alibi" and not self.over_ids:
            i = torch.arange(max_seq_len)
            distance = (i[:, None] - i[None, :]).float()  # i - j, >= 0 below the diagonal
            causal = torch.where(distance >= 0, 0.0, float("-inf"))
            bias = -alibi_slopes(n_head)[:, None, None] * distance.clamp(min=0) + causal
            self.register_buffer("alibi_bias", bias, persistent=False)  # [H, T, T]

    def score_bias(self, T: int, ids: torch.Tensor | None, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """What is added to q k^T / sqrt(hd) before the softmax, the causal mask included:
        [1, H, T, T] (alibi, shared by every sequence), [KB, H, T, T] (alibi over the task's
        ids [KB, T], per sequence) or [T, T] (the mask alone)."""
        if self.attention == "alibi" and not self.over_ids:
            return self.alibi_bias[None, :, :T, :T].to(dtype)
        causal = torch.full((T, T), float("-inf"), device=device, dtype=dtype).triu(1)
        if self.attention == "alibi":
            assert ids is not None, "alibi over the task's ids needs the ids"
            distance = (ids[:, :, None] - ids[:, None, :]).abs().to(dtype)  # |id_q - id_k| [KB, T, T]
            return causal - self.id_slopes.to(dtype).view(1, -1, 1, 1) * distance[:, None]
        return causal

    def forward(self, x: torch.Tensor, ids: torch.Tensor | None = None, return_weights: bool = False):
        """[K, B, T, C] -> [K, B, T, C]; ``ids`` are the task's position ids [K, B, T] (read
        by the coupled_alibi / coupled_rope attention).  With ``return_weights`` also the
        attention weights [K, B, H, T, T] (row t: how query t spreads over keys 0..t),
        computed explicitly as softmax(q k^T / sqrt(hd) + bias).  Training with dropout
        takes the explicit path too (each member's attention dropout from its own
        generator); training without dropout and plain evaluation use the fused kernel."""
        K, B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=-1)  # each [K, B, T, C]
        # members join the batch: one attention call over K * B sequences
        q, k, v = (t.reshape(K * B, T, self.n_head, self.head_dim).transpose(1, 2) for t in (q, k, v))  # [KB, H, T, hd]
        if self.over_ids and self.attention is not None:
            assert ids is not None, f"pos_encoding with {self.attention} over the task's ids needs the ids"
            ids = ids.reshape(K * B, T)
        else:
            ids = None
        if self.attention == "rope" and not self.over_ids:  # the angles of each index: [T, hd/2]
            cos, sin = self.rope_cos[:T], self.rope_sin[:T]
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self.attention == "rope" and self.over_ids:  # the angles of each token's id: [KB, 1, T, hd/2]
            cos, sin = self.rope_cos[ids][:, None], self.rope_sin[ids][:, None]
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        weights = None
        if return_weights or (self.training and self.dropout > 0):  # dropout: each member drops from its own stream
            bias = self.score_bias(T, ids, q.device, q.dtype)
            if bias.dim() == 4:  # one [T, T] per (sequence, head)
                bias = bias.expand(K * B, self.n_head, T, T).reshape(K * B * self.n_head, T, T)
            scores = torch.baddbmm(
                bias, q.flatten(0, 1), k.flatten(0, 1).transpose(1, 2), alpha=1.0 / math.sqrt(self.head_dim)
            )  # bias + q k^T / sqrt(hd) [KB * H, T, T]
            weights = attention_softmax(scores.view(K * B, self.n_head, T, T))  # [KB, H, T, T]
            dropped = self.attn_dropout(weights.view(K, B, self.n_head, T, T)).view(K * B, self.n_head, T, T)
            y = dropped.to(v.dtype) @ v
        elif self.attention == "alibi":
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=self.score_bias(T, ids, q.device, q.dtype))
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).reshape(K, B, T, C)
        out = self.resid_dropout(self.proj(y))
        if not return_weights:
            return out
        assert weights is not None  # computed on the explicit path, which return_weights takes
        return out, weights.view(K, B, self.n_head, T, T)


class MLP(nn.Module):
    def __init__(self, n_members: int, d_model: int, dropout: float, generators: list[torch.Generator]):
        super().__init__()
        self.fc = PackedLinear(n_members, d_model, 4 * d_model)
        self.proj = PackedLinear(n_members, 4 * d_model, d_model)
        self.dropout = PackDropout(dropout, generators)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    def __init__(
        self,
        n_members: int,
        d_model: int,
        n_head: int,
        dropout: float,
        pos_encoding: str,
        max_seq_len: int,
        generators: list[torch.Generator],
        max_position: int = 0,
    ):
        super().__init__()
        self.ln_1 = PackedLayerNorm(n_members, d_model)
        self.attn = CausalSelfAttention(
            n_members, d_model, n_head, dropout, pos_encoding, max_seq_len, generators, max_position
        )
        self.ln_2 = PackedLayerNorm(n_members, d_model)
        self.mlp = MLP(n_members, d_model, dropout, generators)

    def forward(self, x: torch.Tensor, ids: torch.Tensor | None = None, return_attention: bool = False):
        if return_attention:
            mixed, weights = self.attn(self.ln_1(x), ids, return_weights=True)
            x = x + mixed
            return x + self.mlp(self.ln_2(x)), weights
        x = x + self.attn(self.ln_1(x), ids)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """``model(inputs) -> outputs``; position t sees positions <= t, member k sees only itself.

    inputs are ``[K, B, T]`` token ids (or ``[K, B, T, n_in]`` vectors) and outputs
    ``[K, B, T, n_out]``.  A one-member model (K = 1) also takes ``[B, T]`` (or
    ``[B, T, n_in]``) and then answers ``[B, T, n_out]``, as a plain model would.
    ``return_hidden=True`` also returns the final hidden state (after the last
    LayerNorm), shaped like the output with C in place of n_out.

    ``seeds`` (one per member) make member k's initial weights a function of seeds[k]
    alone, drawn on the CPU, so a member starts the same in any pack and on any device;
    without seeds the global torch RNG is used.

    ``dropout_generators``: empty, or one generator per member on the model's device
    (fill it with ``model.dropout_generators[:] = [...]``); in training, member k's
    dropout masks are drawn from the k-th (so a member drops what it would drop alone);
    when empty, from the global RNG.
    """

    # a learned Parameter, a sinusoidal buffer, or None (schemes without a table)
    pos_table: torch.Tensor | None

    def __init__(self, cfg: ModelConfig, io: ModelIO, n_members: int = 1, seeds: list[int] | None = None):
        super().__init__()
        if seeds is not None and len(seeds) != n_members:
            raise ValueError(f"{len(seeds)} seeds for {n_members} members; give one seed per member")
        n_layer, n_head, d_model = cfg.shape
        K = n_members
        self.cfg, self.io, self.pos_encoding, self.max_seq_len = cfg, io, cfg.pos_encoding, io.max_seq_len
        self.read_in = PackedEmbedding(K, io.n_in, d_model) if io.tokens else PackedLinear(K, io.n_in, d_model)
        scheme = position_scheme(cfg.pos_encoding)
        self.takes_positions = scheme.task_ids
        n_ids = cfg.max_position if scheme.task_ids else io.max_seq_len  # rows: one per id
        if scheme.table == "learned":
            self.pos_table = nn.Parameter(torch.zeros(K, n_ids, d_model))
        elif scheme.table == "sinusoidal":
            self.register_buffer("pos_table", sinusoidal_table(n_ids, d_model)[None], persistent=False)
        else:
            self.pos_table = None
        self.dropout_generators: list[torch.Generator] = []  # shared by every dropout below
        self.drop = PackDropout(cfg.dropout, self.dropout_generators)
        self.blocks = nn.ModuleList(
            Block(
                K,
                d_model,
                n_head,
                cfg.dropout,
                cfg.pos_encoding,
                io.max_seq_len,
                self.dropout_generators,
                cfg.max_position,
            )
            for _ in range(n_layer)
        )
        self.ln_f = PackedLayerNorm(K, d_model)
        self.read_out = PackedLinear(K, d_model, io.n_out, bias=not io.tokens)
        for k in range(K):
            generator = torch.Generator().manual_seed(seeds[k]) if seeds is not None else None
            self.init_member(k, generator)

    @property
    def n_members(self) -> int:
        return self.ln_f.weight.shape[0]

    @torch.no_grad()
    def init_member(self, k: int, generator: torch.Generator | None = None) -> None:
        """GPT-2 initialisation of member k: N(0, 0.02) matrices, tables and position
        vectors, residual projections scaled by 1/sqrt(2 * n_layer), zero biases, unit gains."""
        n_layer = len(self.blocks)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                p[k].zero_()
            elif name.startswith("ln") or ".ln_" in name:
                p[k].fill_(1.0)
            else:
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("proj.weight") else 0.02
                p[k].copy_(torch.empty(p.shape[1:]).normal_(0.0, std, generator=generator))

    def n_params(self) -> int:
        """Parameters of one member."""
        return sum(p.numel() for p in self.parameters()) // self.n_members

    def forward(
        self,
        inputs: torch.Tensor,
        positions: torch.Tensor | None = None,
        return_hidden: bool = False,
        return_internals: bool = False,
    ):
        """``positions`` (Long ``[K, B, T]``, or ``[B, T]`` with inputs ``[B, T]``): the
        task's position ids, required by the schemes whose ids the task computes
        (coupled, abacus, randomized, coupled_alibi, coupled_rope) and ignored by the others.

        ``return_internals=True`` (evaluation only, for probes) returns ``(out, Internals)``
        instead: the final hidden state, the residual stream after each block and each
        block's attention weights, computed on the explicit-softmax attention path."""
        single = inputs.dim() == (2 if self.io.tokens else 3)  # [B, T] (or [B, T, n_in]): no member dim
        if single:
            if self.n_members != 1:
                raise ValueError(
                    f"inputs without a member dimension for a pack of {self.n_members}; "
                    "give [K, B, T] inputs or call model.member(k)"
                )
            inputs = inputs[None]
            positions = positions[None] if positions is not None else None
        T = inputs.shape[2]
        if T > self.max_seq_len:
            raise ValueError(f"sequence of {T} positions is longer than the model's {self.max_seq_len}")
        x = self.read_in(inputs)  # [K, B, T, C]
        if self.takes_positions and positions is None:
            raise ValueError(f"pos_encoding={self.pos_encoding} needs the task's position ids; pass positions")
        if self.takes_positions and self.pos_table is not None:
            assert positions is not None  # refused above
            K, V, C = self.pos_table.shape  # ids lie in [0, V): the config checks the task's range
            offset = torch.arange(K, device=positions.device).view(K, 1, 1) * V  # member k reads its own rows
            x = x + F.embedding(positions + offset, self.pos_table.reshape(K * V, C))  # [K, B, T, C]
        elif self.pos_table is not None:
            x = x + self.pos_table[:, None, :T]  # [K or 1, 1, T, C]: the rows of the token indices
        x = self.drop(x)
        layers, attention = [], []
        ids = positions if self.takes_positions else None  # [K, B, T], for attention over ids
        for block in self.blocks:
            if return_internals:
                x, weights = block(x, ids, return_attention=True)
                layers.append(x)
                attention.append(weights)
            else:
                x = block(x, ids)
        hidden = self.ln_f(x)  # [K, B, T, C]
        out = self.read_out(hidden)  # [K, B, T, n_out]
        if return_internals:
            internals = Internals(hidden=hidden, layers=layers, attention=attention)
            return (out[0], internals.member(0)) if single else (out, internals)
        if single:
            out, hidden = out[0], hidden[0]
        return (out, hidden) if return_hidden else out

    def member(self, k: int) -> "Member":
        """Member k as a one-member model sharing this pack's weights (no copy)."""
        return Member(self, k)

    def members(self, ks: list[int]) -> "Member":
        """Members ks as a pack of len(ks) (their weights copied out): ``[len(ks), B, T] -> ...``."""
        return Member(self, list(ks))

    def flops_per_example(self, seq_len: int) -> float:
        """Training FLOPs for one sequence of one member: 6 * params per token + attention (fwd+bwd)."""
        n_layer, d_model = len(self.blocks), self.ln_f.weight.shape[1]
        matmul_params = sum(p[0].numel() for n, p in self.named_parameters() if n.endswith("weight") and p.dim() == 3)
        if self.io.tokens:
            matmul_params -= self.read_in.weight[0].numel()  # an embedding lookup is not a matmul
        attention = 2 * 2 * n_layer * seq_len * seq_len * d_model  # QK^T and AV, forward
        return 6.0 * matmul_params * seq_len + 3.0 * attention


class Member(nn.Module):
    """One member of a pack, called like a plain model: ``[B, T] -> [B, T, n_out]``;
    or, for a list ``k`` of members, those members as a pack of len(k).

    Every call runs the pack's module code on member k's slices of the weights, so
    tasks can evaluate a member without knowing about packs.
    """

    def __init__(self, pack: Transformer, k: int | list[int]):
        super().__init__()
        self.pack, self.k = pack, k

    def forward(
        self,
        inputs: torch.Tensor,
        positions: torch.Tensor | None = None,
        return_hidden: bool = False,
        return_internals: bool = False,
    ):
        index = self.k if isinstance(self.k, list) else slice(self.k, self.k + 1)
        weights = {name: p[index] for name, p in self.pack.named_parameters()}
        return functional_call(
            self.pack,
            weights,
            (inputs,),
            {"positions": positions, "return_hidden": return_hidden, "return_internals": return_internals},
            strict=False,
        )
