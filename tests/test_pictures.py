"""Issue 23, item 8: pictures tell right from wrong by shape as well as colour (colour-blind
readers): LSA marks the model's cells with a dot (optimal) or a cross, Sudoku and arithmetic
hatch a wrong digit's cell (arithmetic: tests/test_tools.py)."""

import numpy as np

from evaluators.render import RIGHT, RIGHT_MARKER, WRONG, WRONG_HATCH, WRONG_MARKER, render_example


def hatched(fig):
    return [p for p in fig.axes[0].patches if p.get_hatch() == WRONG_HATCH]


def test_lsa_marks_right_and_wrong_cells_by_shape():
    lsa = {"task": "lsa", "n": 3, "max_cost": 9}
    costs = np.array([1, 9, 9, 9, 1, 9, 9, 9, 1])
    target = np.array([2, 1, 1, 1, 2, 1, 1, 1, 2])
    swapped = np.array([1, 2, 1, 2, 1, 1, 1, 1, 2])  # rows 0 and 1 wrong, row 2 right
    marks = [(line.get_marker(), line.get_color()) for line in render_example(lsa, costs, target, swapped).axes[0].lines]
    assert sorted(marks) == sorted([(WRONG_MARKER, WRONG), (WRONG_MARKER, WRONG), (RIGHT_MARKER, RIGHT)])
    assert RIGHT_MARKER != WRONG_MARKER


def test_sudoku_hatches_the_wrong_cells_only():
    solution = np.array([(r * 3 + r // 3 + c) % 9 + 1 for r in range(9) for c in range(9)])
    puzzle = solution.copy()
    puzzle[[0, 10, 20, 30]] = 0  # four blanks
    guess = solution.copy()
    guess[10] = guess[10] % 9 + 1  # one wrong
    guess[30] = 0  # one not a digit ("?")
    fig = render_example({"task": "sudoku"}, puzzle + 1, solution + 1, guess + 1)
    assert sorted((p.get_x() + 0.5, p.get_y() + 0.5) for p in hatched(fig)) == [(1.0, 1.0), (3.0, 3.0)]
    assert "wrong ones hatched" in fig.axes[0].get_title()
    assert hatched(render_example({"task": "sudoku"}, puzzle + 1, solution + 1, solution + 1)) == []




def test_curves_of_several_runs_differ_by_line_style(runs_zoo, tmp_path, monkeypatch):
    """plot_run.py: overlaid runs are told apart by line style (and evaluations by marker) as well
    as colour."""
    from conftest import load_script

    plot_run = load_script("plot_run")
    figures = []
    monkeypatch.setattr(plot_run, "save", lambda fig, out, overwrite: figures.append(fig))
    plot_run.plot_runs([runs_zoo["alpha"], runs_zoo["beta"]], tmp_path / "curves.png")
    for ax in figures[0].axes:
        if len(ax.lines) == 2:
            assert ax.lines[0].get_linestyle() != ax.lines[1].get_linestyle(), ax.get_title()
            if ax.get_title().startswith("eval/"):
                assert ax.lines[0].get_marker() != ax.lines[1].get_marker()
