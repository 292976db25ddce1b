"""Cross-cutting helpers every stage uses: configuration, its schema, errors, atomic files."""
