"""Tables, figures and an HTML report from a sweep's Parquet results (pandas, pyarrow, numpy, matplotlib).

Never imports torch or ray::

    import analysis
    results = analysis.load("mia_results/quickstart")
    analysis.tables.best_step_table(results)             # per family x train_size x epsilon
    analysis.write_report("mia_results/quickstart")      # -> .../report/report.html
    text, report = analysis.finish("mia_results/quickstart")  # what a sweep prints at its end
"""

from analysis import figures, tables
from analysis.loader import AnalysisError, Results, load, read_scores
from analysis.report import write_report
from analysis.summary import finish

__all__ = ["AnalysisError", "Results", "figures", "finish", "load", "read_scores", "tables", "write_report"]
