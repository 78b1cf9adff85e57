//! The features role: entities, feature views, stores, retrieval and transforms.
