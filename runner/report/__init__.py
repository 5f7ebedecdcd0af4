"""`runner report`: one self-contained HTML page of what a batch did, drawn from its journal
and its log (data), as inline SVG (charts) in one page (page)."""
