"""The web export's page (`index.html`) and ES module (`chargen.js`), copied by `keras_chargen.export.web`."""
