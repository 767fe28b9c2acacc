"""Orchestration and reports: experiment configs, papermill runs, HTML index pages.

Orchestration
- :mod:`cxrlib.report.locate`    where notebooks, experiment configs and reports are found
- :mod:`cxrlib.report.config`    read, shrink (``--smoke``), override, validate and hash configs
- :mod:`cxrlib.report.plan`      config -> ordered notebook stages (strategies x folds fan out)
- :mod:`cxrlib.report.scheduler` the Scheduler: pending / running / done, Ctrl-C
- :mod:`cxrlib.report.execute`   one notebook: papermill in its own process, nbconvert HTML
- :mod:`cxrlib.report.runner`    ``run_experiment``: config -> plan -> run folder -> scheduler -> index
Run folder
- :mod:`cxrlib.report.layout`    paths, ``run.json``/``stage.json``, resume rules, figure registry
Inside a notebook
- :mod:`cxrlib.report.notebook`  ``open_stage`` (context of the executing stage), figure/table saving
- :mod:`cxrlib.report.datastage`, :mod:`cxrlib.report.heatmaps`  what notebooks 01 and 05 call
- :mod:`cxrlib.report.plots`, :mod:`cxrlib.report.results`  figures and the run's result tables
Rendering
- :mod:`cxrlib.report.index`     the run's ``index.html``
- :mod:`cxrlib.report.progress`  the terminal progress lines
- :mod:`cxrlib.report.cli`       ``cxr run`` and ``cxr demo``
"""
