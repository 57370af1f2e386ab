"""The part of the SlicerUAD module that runs without the Slicer application:
MRML scene logic (on a scene passed in explicitly), panels and the job runner."""
