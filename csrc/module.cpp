// The Python module softdiff_kernels._C: importing it loads the library, whose TORCH_LIBRARY blocks register
// the ops softdiff_C::dct_filter and softdiff_C::pixel_filter. It defines no Python functions of its own.
#include <Python.h>

extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "softdiff CUDA kernels (ops under torch.ops.softdiff_C)",
                               -1, nullptr};
  return PyModule_Create(&module);
}
