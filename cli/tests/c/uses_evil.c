/* A harmless library that links libevil.so (found through its rpath). */
int evil_value(void);
int uses_evil(void) { return evil_value(); }
