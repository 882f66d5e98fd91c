# Third-party dependencies. Every one names the Debian package that provides it,
# so a missing one fails configuration with a message saying what to install.
include(FeatureSummary)

# A LibTorch named by Torch_DIR (e.g. the CUDA build inside PyPI's torch wheel) must win over
# Debian's libtorch-dev in /usr/lib: TorchConfig's find_library would otherwise pick the system copy.
if(Torch_DIR)
  get_filename_component(_torch_prefix "${Torch_DIR}/../../.." ABSOLUTE)
  list(PREPEND CMAKE_PREFIX_PATH "${_torch_prefix}")
endif()
find_package(Torch)
set_package_properties(Torch PROPERTIES TYPE REQUIRED
  PURPOSE "tensor compute (Debian: libtorch-dev, or Torch_DIR=<torch wheel>/share/cmake/Torch for CUDA)")
find_package(HDF5 COMPONENTS C)
set_package_properties(HDF5 PROPERTIES TYPE REQUIRED PURPOSE "atlas files (Debian: libhdf5-dev)")
find_package(nlohmann_json 3.10)
set_package_properties(nlohmann_json PROPERTIES TYPE REQUIRED
  PURPOSE "config.json, safetensors headers (Debian: nlohmann-json3-dev)")
find_package(CLI11)
set_package_properties(CLI11 PROPERTIES TYPE REQUIRED PURPOSE "command line (Debian: libcli11-dev)")
find_package(PkgConfig)
set_package_properties(PkgConfig PROPERTIES TYPE REQUIRED PURPOSE "locating PCRE2 (Debian: pkgconf)")
if(PkgConfig_FOUND)
  pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)
endif()
if(MOEATLAS_BUILD_TESTS)
  find_package(Qt6 COMPONENTS Core Test)
  set_package_properties(Qt6 PROPERTIES TYPE REQUIRED PURPOSE "Qt Test suites (Debian: qt6-base-dev)")
endif()
if(MOEATLAS_BUILD_GUI)
  find_package(Qt6 COMPONENTS Core Gui Widgets Charts Svg Concurrent)
  set_package_properties(Qt6 PROPERTIES TYPE REQUIRED
                         PURPOSE "moeatlas-gui (Debian: qt6-base-dev qt6-charts-dev qt6-svg-dev)")
endif()

if(Torch_FOUND)
  # TorchConfig puts its flags into TORCH_CXX_FLAGS and TORCH_LIBRARIES; wrap them in one target.
  add_library(moeatlas_torch INTERFACE)
  target_link_libraries(moeatlas_torch INTERFACE ${TORCH_LIBRARIES})
  target_include_directories(moeatlas_torch SYSTEM INTERFACE ${TORCH_INCLUDE_DIRS})
  separate_arguments(_torch_flags UNIX_COMMAND "${TORCH_CXX_FLAGS}")
  target_compile_options(moeatlas_torch INTERFACE ${_torch_flags})
  set(MOEATLAS_TORCH_HAS_CUDA OFF)
  if(C10_CUDA_LIBRARY OR TARGET torch_cuda OR CAFFE2_USE_CUDA)
    set(MOEATLAS_TORCH_HAS_CUDA ON)
  endif()
  # The torch wheel's CUDA libraries link against the CUDA/NCCL libraries of the nvidia-* wheels
  # installed beside it (site-packages/nvidia/*/lib), which may be newer than the system's.
  if(MOEATLAS_TORCH_HAS_CUDA AND _torch_prefix AND IS_DIRECTORY "${_torch_prefix}/../nvidia")
    file(GLOB _nvidia_libs LIST_DIRECTORIES true "${_torch_prefix}/../nvidia/*/lib" "${_torch_prefix}/../nvidia/cu*/lib")
    foreach(_dir IN LISTS _nvidia_libs)
      target_link_options(moeatlas_torch INTERFACE "LINKER:-rpath-link,${_dir}" "LINKER:-rpath,${_dir}")
    endforeach()
  endif()
  if(MOEATLAS_ENABLE_CUDA AND NOT MOEATLAS_TORCH_HAS_CUDA)
    message(FATAL_ERROR "MOEATLAS_ENABLE_CUDA=ON but the LibTorch at ${Torch_DIR} has no CUDA. "
      "Point Torch_DIR at a CUDA build, e.g. $(python -c 'import torch;print(torch.utils.cmake_prefix_path)')/Torch")
  endif()
  message(STATUS "LibTorch ${Torch_VERSION} at ${Torch_DIR} (CUDA: ${MOEATLAS_TORCH_HAS_CUDA})")
endif()
