//! The CA hierarchy: root, per-tenant name-constrained intermediates, leaves.
