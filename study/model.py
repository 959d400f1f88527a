"""A decoder-only transformer, readable in one file.

GPT-2 style pre-LayerNorm blocks (attention + MLP with residuals).  Two ways in:
token ids through an embedding table (arithmetic) or vectors through a linear
read-in (in-context regression); two ways out: vocabulary logits or a linear read-out.
The position encoding is a parameter:

- ``learned``:    a trained table of absolute position vectors added to the input;
- ``sinusoidal``: the fixed sin/cos table of "Attention is all you need", added;
- ``rope``:       queries and keys rotated by position-dependent angles (relative);
- ``alibi``:      a per-head linear penalty -m_h * (i - j) added to attention scores;
- ``none``:       no position signal beyond the causal mask (NoPE).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from study.config import ModelConfig
from study.tasks.base import ModelIO


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


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_head: int, dropout: float, pos_encoding: str, max_seq_len: int):
        super().__init__()
        self.n_head, self.head_dim = n_head, d_model // n_head
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)
        self.pos_encoding = pos_encoding
        if pos_encoding == "rope":
            cos, sin = rope_angles(max_seq_len, self.head_dim)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        if pos_encoding == "alibi":
            i = torch.arange(max_seq_len)
            distance = (i[:, None] - i[None, :]).float()  # i - j, >= 0 below the diagonal
            causal = torch.where(distance >= 0, 0.0, float("-inf"))
            bias = -alibi_slopes(n_head)[:, None, None] * distance.clamp(min=0) + causal
            self.register_buffer("alibi_bias", bias, persistent=False)  # [H, T, T]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, self.head_dim).transpose(1, 2) for t in (q, k, v))  # [B, H, T, hd]
        if self.pos_encoding == "rope":
            cos, sin = self.rope_cos[:T], self.rope_sin[:T]
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        dropout = self.dropout if self.training else 0.0
        if self.pos_encoding == "alibi":
            bias = self.alibi_bias[:, :T, :T].to(q.dtype)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.proj(y))


class MLP(nn.Module):
    def __init__(self, d_model: int, dropout: float):
        super().__init__()
        self.fc = nn.Linear(d_model, 4 * d_model)
        self.proj = nn.Linear(4 * d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, d_model: int, n_head: int, dropout: float, pos_encoding: str, max_seq_len: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_head, dropout, pos_encoding, max_seq_len)
        self.ln_2 = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """``model(inputs) -> outputs [B, T, io.n_out]``; position t sees positions <= t."""

    def __init__(self, cfg: ModelConfig, io: ModelIO):
        super().__init__()
        n_layer, n_head, d_model = cfg.shape
        self.io, self.pos_encoding, self.max_seq_len = io, cfg.pos_encoding, io.max_seq_len
        self.read_in = nn.Embedding(io.n_in, d_model) if io.tokens else nn.Linear(io.n_in, d_model)
        if cfg.pos_encoding == "learned":
            self.pos_table = nn.Parameter(torch.zeros(io.max_seq_len, d_model))
        elif cfg.pos_encoding == "sinusoidal":
            self.register_buffer("pos_table", sinusoidal_table(io.max_seq_len, d_model), persistent=False)
        else:
            self.pos_table = None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(
            Block(d_model, n_head, cfg.dropout, cfg.pos_encoding, io.max_seq_len) for _ in range(n_layer)
        )
        self.ln_f = nn.LayerNorm(d_model)
        self.read_out = nn.Linear(d_model, io.n_out, bias=not io.tokens)
        self.apply(self._init_weights)
        # GPT-2: scale the residual projections by 1/sqrt(2 * n_layer)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, Transformer) and isinstance(module.pos_table, nn.Parameter):
            nn.init.normal_(module.pos_table, mean=0.0, std=0.02)

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, inputs: torch.Tensor, return_hidden: bool = False):
        T = inputs.shape[1]
        if T > self.max_seq_len:
            raise ValueError(f"sequence of {T} positions is longer than the model's {self.max_seq_len}")
        x = self.read_in(inputs)  # [B, T, d]
        if self.pos_table is not None:
            x = x + self.pos_table[:T]
        x = self.drop(x)
        for block in self.blocks:
            x = block(x)
        hidden = self.ln_f(x)
        out = self.read_out(hidden)
        return (out, hidden) if return_hidden else out

    def flops_per_example(self, seq_len: int) -> float:
        """Training FLOPs for one sequence: 6 * params per token + attention (fwd+bwd)."""
        n_layer, d_model = len(self.blocks), self.ln_f.normalized_shape[0]
        matmul_params = sum(p.numel() for n, p in self.named_parameters() if p.dim() == 2 and "pos_table" not in n)
        if self.io.tokens:
            matmul_params -= self.read_in.weight.numel()  # an embedding lookup is not a matmul
        attention = 2 * 2 * n_layer * seq_len * seq_len * d_model  # QK^T and AV, forward
        return 6.0 * matmul_params * seq_len + 3.0 * attention
