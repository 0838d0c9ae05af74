"""Results of the Python API show themselves in notebooks (``_repr_svg_``, ``_repr_html_``)."""
import gradcli

WORKED = "(x+y)*max(y,z)"
XYZ = {"x": 1, "y": 2, "z": 0}


def test_results_draw_their_graph():
    g = gradcli.grad(WORKED, **XYZ)._repr_svg_()
    assert "<svg" in g and "∂f/∂y" in g  # the gradient picture, with the fan-out total
    e = gradcli.evaluate(WORKED, **XYZ)._repr_svg_()
    assert "<svg" in e and "∂f/∂y" not in e


def test_show_page_displays_in_notebooks():
    page = gradcli.show(WORKED, **XYZ)
    assert "<iframe" in page._repr_html_()
