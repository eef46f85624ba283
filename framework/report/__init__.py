"""The study report: methods prose, summaries, figures, QC tables, the HTML pages and the DVC views."""
