"""The paper's Table 2 ablations in small (`maskrcnn ablate`): the tables and their rows
(`tables`), a checked plan (`plan`), the runs (`runs`) and the report beside the paper's
figures (`report`)."""
