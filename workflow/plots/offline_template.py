"""Write the HTML template `dvc plots show` fills (.dvc/config `plots.html_template`), with Vega,
Vega-Lite and Vega-Embed inlined from vl-convert's bundle: DVC's default page loads them from a
CDN and stays blank offline. `make install` runs it: python workflow/plots/offline_template.py OUT
"""

import sys
from pathlib import Path

import vl_convert

# DVC replaces {plot_divs} (and {refresh_tag}); without {scripts} it adds no CDN <script> tags.
PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <script>%s</script>
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""

if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.parent.mkdir(parents=True, exist_ok=True)
    bundle = vl_convert.javascript_bundle().replace("</script", "<\\/script")
    out.write_text(PAGE % bundle)
