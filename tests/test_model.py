"""The transformer: causal, the right size, every position encoding usable."""

import pytest
import torch

from study.config import ModelConfig
from study.model import RowSoftmax, Transformer, apply_rope, rope_angles
from study.tasks.base import ModelIO

ENCODINGS = ["learned", "sinusoidal", "rope", "alibi", "none"]


@pytest.mark.parametrize("pos_encoding", ENCODINGS)
def test_outputs_never_depend_on_later_positions(pos_encoding):
    torch.manual_seed(0)
    model = Transformer(ModelConfig(pos_encoding=pos_encoding), ModelIO(12, 12, True, 16)).eval()
    tokens = torch.randint(0, 12, (3, 16))
    changed = tokens.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % 12
    before, after = model(tokens), model(changed)
    assert before.shape == (3, 16, 12)
    torch.testing.assert_close(before[:, :10], after[:, :10])
    assert not torch.allclose(before[:, 10:], after[:, 10:])


def test_position_free_model_is_permutation_equivariant_but_learned_is_not():
    """In one layer without position encoding the prefix is a set: swapping earlier tokens leaves the last output."""
    torch.manual_seed(0)
    tokens = torch.tensor([[1, 2, 3, 4, 5, 6]])
    swapped = torch.tensor([[2, 1, 3, 4, 5, 6]])
    nope = Transformer(ModelConfig(pos_encoding="none", n_layer=1), ModelIO(8, 8, True, 6)).eval()
    torch.testing.assert_close(nope(tokens)[:, -1], nope(swapped)[:, -1])
    learned = Transformer(ModelConfig(pos_encoding="learned", n_layer=1), ModelIO(8, 8, True, 6)).eval()
    assert not torch.allclose(learned(tokens)[:, -1], learned(swapped)[:, -1])


def test_rope_scores_depend_only_on_relative_position():
    cos, sin = rope_angles(32, 8)
    q, k = torch.randn(8), torch.randn(8)

    def score(i: int, j: int) -> torch.Tensor:
        qi = apply_rope(q.view(1, 1, 1, 8), cos[i : i + 1], sin[i : i + 1])
        kj = apply_rope(k.view(1, 1, 1, 8), cos[j : j + 1], sin[j : j + 1])
        return (qi * kj).sum()

    torch.testing.assert_close(score(5, 2), score(20, 17))


@pytest.mark.parametrize("size, expected", [("nano", 0.09e6), ("standard", 9.5e6)])
def test_parameter_counts_match_the_published_models(size, expected):
    io = ModelIO(20, 1, False, 82) if size == "standard" else ModelIO(12, 12, True, 16)
    n = Transformer(ModelConfig(size=size), io).n_params()
    assert abs(n - expected) / expected < 0.05


def test_vector_read_in_and_hidden_states():
    model = Transformer(ModelConfig(size="micro"), ModelIO(5, 1, False, 10))
    out, hidden = model(torch.randn(2, 10, 5), return_hidden=True)
    assert out.shape == (2, 10, 1) and hidden.shape == (2, 10, 128)
    with pytest.raises(ValueError, match="longer than"):
        model(torch.randn(1, 11, 5))


@pytest.mark.parametrize("pos_encoding", ["learned", "rope", "alibi"])
def test_a_packed_member_computes_what_the_same_seed_computes_alone(pos_encoding):
    cfg, io = ModelConfig(pos_encoding=pos_encoding, dropout=0.0), ModelIO(12, 12, True, 16)
    pack = Transformer(cfg, io, n_members=3, seeds=[5, 6, 7]).eval()
    alone = Transformer(cfg, io, seeds=[6]).eval()
    tokens = torch.randint(0, 12, (3, 4, 16))
    out, hidden = pack(tokens, return_hidden=True)
    assert out.shape == (3, 4, 16, 12) and hidden.shape == (3, 4, 16, 48)
    torch.testing.assert_close(out[1], alone(tokens[1]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pack.member(1)(tokens[1]), alone(tokens[1]), atol=1e-5, rtol=1e-5)
    assert pack.n_params() == alone.n_params()
    assert pack.flops_per_example(16) == alone.flops_per_example(16)


def test_a_members_loss_moves_only_its_own_weights():
    pack = Transformer(ModelConfig(), ModelIO(12, 12, True, 16), n_members=3, seeds=[0, 1, 2])
    pack(torch.randint(0, 12, (3, 2, 16)))[1].sum().backward()
    for name, p in pack.named_parameters():
        assert p.grad[[0, 2]].abs().max() == 0 and p.grad[1].abs().max() > 0, name


def test_a_pack_refuses_inputs_without_a_member_dimension():
    pack = Transformer(ModelConfig(), ModelIO(12, 12, True, 16), n_members=2)
    with pytest.raises(ValueError, match="without a member dimension"):
        pack(torch.randint(0, 12, (2, 16)))


def test_row_softmax_is_softmax_with_its_gradient():
    """The written-out softmax of the explicit attention path: the values and the gradient of
    torch's softmax on causally masked score rows (a fully -inf entry left of the diagonal)."""
    torch.manual_seed(0)
    mask = torch.full((7, 7), float("-inf")).triu(1)
    scores = (torch.randn(3, 2, 7, 7, dtype=torch.float64) + mask).requires_grad_()
    grad = torch.randn(3, 2, 7, 7, dtype=torch.float64)
    ours = RowSoftmax.apply(scores)
    (d_ours,) = torch.autograd.grad(ours, scores, grad)
    reference = scores.softmax(-1)
    (d_reference,) = torch.autograd.grad(reference, scores, grad)
    assert torch.allclose(ours, reference, atol=1e-12) and torch.allclose(d_ours, d_reference, atol=1e-12)
    assert torch.all(ours[..., 0, 1:] == 0) and torch.allclose(ours.sum(-1), torch.ones(3, 2, 7, dtype=torch.float64))
    assert torch.autograd.gradcheck(RowSoftmax.apply, (scores[:1, :1, 2:5, :5].detach().clone().requires_grad_(),))
