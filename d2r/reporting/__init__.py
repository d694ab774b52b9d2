"""The report of one experiment: reads the results tree, computes its numbers, draws the page.

One way, each module one job:

    load      the results tree and params.yaml -> Data (checked; ReportError names the file)
    stats     rliable's statistics over runs x tasks (arrays in, JSON data out)
    metrics   every number shown: metrics/E.json, the timing and curves files, what the page draws
    figures   the plotly figures, drawing numbers they are given
    html      the sections: tables, notes and figures, escaped and formatted
    videos    the render job's videos, read and embedded
    page      the sections assembled into one self-contained HTML file
    paper     the paper table (reports/paper.html): every experiment's metrics beside the
              published numbers of published.yaml (its own job, d2r/jobs/paper.py)

The job that writes the files is d2r/jobs/report.py (`python -m d2r report`).
"""
