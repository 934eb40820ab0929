//! The findings of a result: sentences written from its numbers, never canned prose.
