"""Training progress: a bar on a terminal, one plain line per log period elsewhere."""

import io

from maskrcnn.engine.progress import TrainingProgress, item_progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_each_log_call_prints_one_plain_line():
    stream = io.StringIO()
    progress = TrainingProgress(total=40, initial=0, enabled=True, stream=stream)
    for iteration in range(1, 41):
        progress.step()
        if iteration % 20 == 0:
            progress.log(iteration, {"loss_mask": 0.25, "loss_box_reg": 0.5, "loss": 0.75}, lr=0.02)
    progress.write("iteration 40: box AP 50.0, mask AP 40.0")
    progress.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert len(lines) == 3
    assert lines[0].startswith("iteration 20/40  loss 0.750 (mask 0.250 box_reg 0.500)  lr 2.00e-02")
    assert "s/it  ETA 0:00:00" in lines[1] and lines[1].startswith("iteration 40/40")
    assert lines[2] == "iteration 40: box AP 50.0, mask AP 40.0"


def test_on_a_terminal_a_bar_is_drawn():
    stream = Terminal()
    progress = TrainingProgress(total=5, initial=2, enabled=True, stream=stream)
    progress.step()
    progress.log(3, {"loss": 1.5}, lr=0.01)
    progress.close()
    assert "\r" in stream.getvalue() and "3/5" in stream.getvalue()


def test_other_ranks_print_nothing():
    stream = Terminal()
    progress = TrainingProgress(total=5, initial=0, enabled=False, stream=stream)
    progress.step()
    progress.log(1, {"loss": 1.0}, lr=0.01)
    progress.write("not shown")
    progress.close()
    assert stream.getvalue() == ""


def test_items_off_a_terminal_print_evenly_spaced_plain_lines():
    stream = io.StringIO()
    seen = list(item_progress(range(25), "eval", "image", lines=10, stream=stream))
    assert seen == list(range(25))  # every item, in order
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    # every ceil(25 / 10) = 3 items, and the last
    assert [line.split()[1] for line in lines] == [f"{n}/25" for n in (*range(3, 25, 3), 25)]
    assert lines[-1].startswith("eval: 25/25 images  ") and lines[-1].endswith("ETA 0:00:00")


def test_items_with_no_lines_or_disabled_print_nothing():
    for kwargs in ({"lines": 0}, {"enabled": False}, {"enabled": False, "stream": Terminal()}):
        stream = kwargs.pop("stream", io.StringIO())
        assert list(item_progress([1, 2, 3], "predict", "image", stream=stream, **kwargs)) == [1, 2, 3]
        assert stream.getvalue() == ""


def test_items_on_a_terminal_draw_a_bar():
    stream = Terminal()
    assert list(item_progress(range(4), "eval", "image", stream=stream)) == [0, 1, 2, 3]
    assert "\r" in stream.getvalue() and "4/4" in stream.getvalue()
