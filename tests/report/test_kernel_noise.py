"""Library warnings and stderr of notebook cells go to the stage log, not the rendered notebook."""

from __future__ import annotations

import nbformat

from cxrlib.report.execute import execute_stage
from cxrlib.report.plan import Stage

NOISY = '''
import logging, sys, warnings
warnings.warn("a library deprecation note", DeprecationWarning)
warnings.warn("IProgress not found", UserWarning)
logging.getLogger("absl").warning("an absl log line")
print("to stderr", file=sys.stderr)
from tqdm.auto import tqdm
for _ in tqdm(range(3)):
    pass
print("visible result")
'''


def test_noise_goes_to_the_stage_log(tmp_path):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('run_dir = ""')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(NOISY)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    src = tmp_path / "src"
    src.mkdir()
    nbformat.write(nb, str(src / "noisy.ipynb"))
    run = tmp_path / "run"
    out_nb = execute_stage(Stage("01_data", "data", "noisy.ipynb"), run, {"run_dir": str(run)}, src)

    outputs = [o for c in nbformat.read(str(out_nb), as_version=4).cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("name") == "stderr"], outputs
    assert any("visible result" in o.get("text", "") for o in outputs)
    log = (run / "notebooks" / "01_data.stderr.log").read_text()
    for text in ("a library deprecation note", "IProgress not found", "an absl log line", "to stderr", "3/3"):
        assert text in log, text
