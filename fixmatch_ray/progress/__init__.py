"""Progress a person can watch: the ETA (:mod:`.eta`), the sweep's board (:mod:`.board`) and its
live and plain views (:mod:`.view`). No Ray here."""
