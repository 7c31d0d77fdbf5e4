"""What a step costs on a GPU before anything is measured: counts made by the code (:mod:`.counts`),
data sheets (:mod:`.cards`), the stated model over both (:mod:`.estimate`), and the step-time table
the sweep plan and ``bench gpu`` share (:mod:`.steptimes`). No Ray here."""
