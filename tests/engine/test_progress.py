"""Training progress: a bar on a terminal, one plain line per log period elsewhere."""

import io

from maskrcnn.engine.progress import TrainingProgress


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
