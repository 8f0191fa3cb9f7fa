"""Head models and linear blend skinning: HeadModel (identity, expression and pose -> posed mesh),
the FLAME loader, the bundled open head model and small mesh computations."""
