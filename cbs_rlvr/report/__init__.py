"""The report layer: what a reader sees. The figures in one style (`figures`, `figures_habits`,
`figures_plan`), the paper tables and their legends (`tables`), the HTML of each section and of
the index, with every string from the data escaped at one boundary (`html`, `templates/`), and the
headless-Chromium checks and screenshots (`browser`).

It takes the results of the layers below (fits, plans, tables) and computes nothing new; the words
it prints come from `cbs_rlvr.words`.
"""
