"""Master patient index (issue 4): one Person per resident, Fellegi–Sunter matching, review
queue, $match, PIXm, merge/unmerge, rebuild, population registry events."""
