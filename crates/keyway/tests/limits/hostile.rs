//! keyway as a client against the testbed's hostile answers.
