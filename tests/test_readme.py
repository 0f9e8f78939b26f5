"""The README's Python examples run as written (the Keras one with fewer epochs)."""
import os
import re

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def python_block(heading):
    text = open(README).read()
    section = text[text.index(heading):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_keras_example():
    code = python_block("### 3. Keras").replace("epochs=20", "epochs=1").replace("steps_per_epoch=26", "steps_per_epoch=3")
    namespace = {}
    exec(code, namespace)
    assert namespace["my_model"].output_shape == (None, 10)


def test_graph_example():
    namespace = {}
    exec(python_block("### 4. Your own graphical model"), namespace)
    loss = float(namespace["loss"])
    assert loss == loss and loss > 0  # finite (NaN != NaN) and a positive negative-bound
