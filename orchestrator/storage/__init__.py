"""Disk of a study: what it takes (:mod:`.du`), what may go (:mod:`.gc`), a grid's ``[storage]`` policy
(:mod:`.settings`), and which file of a job directory is of which kind (:mod:`.kinds`)."""
