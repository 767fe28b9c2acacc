"""Orchestration and reports: experiment configs, papermill runs, HTML index pages.

- :mod:`cxrlib.report.config`   read, shrink (``--smoke``) and hash experiment YAML configs
- :mod:`cxrlib.report.plan`     config -> ordered notebook stages (strategies x folds fan out)
- :mod:`cxrlib.report.runner`   execute stages with papermill, resume, render with nbconvert
- :mod:`cxrlib.report.notebook` what a notebook calls first (``open_stage``), figure saving
- :mod:`cxrlib.report.results`  tidy result tables and the papers' figures beside this run's
- :mod:`cxrlib.report.index`    the run's ``index.html``
- :mod:`cxrlib.report.cli`      ``cxr run`` and ``cxr demo``
"""
