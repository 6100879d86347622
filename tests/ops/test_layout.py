import torch

from maskrcnn.ops.layout import dense_gradient


def rpn_like_loss(output: torch.Tensor) -> torch.Tensor:
    """Read a (N, A, H, W) output as the RPN does: flattened per image, concatenated with
    another level along the anchors, then indexed."""
    flat = output.permute(0, 2, 3, 1).reshape(output.shape[0], -1)
    joined = torch.cat((flat, torch.zeros(output.shape[0], 7)), dim=1)
    return joined.flatten()[torch.tensor([0, 5, 9, 40, 77])].square().sum()


def test_gradient_is_unchanged_and_dense_in_the_input_layout():
    for layout in (torch.channels_last, torch.contiguous_format):
        x = torch.randn(2, 3, 4, 5).contiguous(memory_format=layout).requires_grad_()
        seen = []
        y = x * 2
        y.register_hook(seen.append)
        rpn_like_loss(dense_gradient(y)).backward()
        with_dense = x.grad.clone()
        assert seen[0].is_contiguous(memory_format=layout)
        x.grad = None
        seen.clear()
        y = x * 2
        y.register_hook(seen.append)
        rpn_like_loss(y).backward()
        assert not seen[0].is_contiguous(memory_format=layout)  # what the slow path gets
        torch.testing.assert_close(with_dense, x.grad, rtol=0, atol=0)


def test_no_graph_no_wrapper():
    x = torch.randn(2, 3)
    assert dense_gradient(x) is x


def test_zero_images():
    for layout in (torch.channels_last, torch.contiguous_format):
        x = torch.randn(0, 3, 4, 5).contiguous(memory_format=layout).requires_grad_()
        (dense_gradient(x * 2) * 3).sum().backward()
        assert x.grad.shape == (0, 3, 4, 5)
