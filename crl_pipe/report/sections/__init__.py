"""One module per section of the report page; each builds its part from one :class:`ReportInputs`.

A section function takes the inputs and returns what its template
(``templates/sections/<anchor>.html.j2``) renders: tables, figures and facts, never markup.
"""
