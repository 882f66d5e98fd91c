# clang-tidy with the root .clang-tidy on the project's own sources (core/, views/, app/) while they
# compile: each TU is checked right before it is compiled, and a finding fails its compile step
# (WarningsAsErrors). Tests, benchmarks and third-party code are not checked. docs/decisions.md #28, #59.
#
# Two clang-tidy versions (decision 59):
# - clang-tidy 22 (Debian bookworm-security) for every TU that does not include LibTorch: it no longer
#   runs its matchers over system headers (Qt, nlohmann-json, CLI11, HDF5), 3-4.5x faster per TU than 14;
# - clang-tidy 14 for the targets that include LibTorch (moeatlas_engine, moeatlas_train), parsed
#   against libc++ 14: with libstdc++ 12 in C++20, clang instantiates std::vector<c10::IValue>'s
#   constexpr destructor while IValue is still incomplete (ATen/core/List.h) and rejects LibTorch 1.13's
#   headers; clang 22 rejects them with libc++ 22 as well. GCC, which builds the code, is unaffected.
# Neither can read GCC's precompiled header (clang reads cmake_pch.hxx.gch beside the forced include and
# stops: "not a PCH file"), so core/CMakeLists.txt skips the PCH when this is on.
find_program(MOEATLAS_CLANG_TIDY22_EXE NAMES clang-tidy-22)
find_program(MOEATLAS_CLANG_TIDY14_EXE NAMES clang-tidy-14)
if(NOT MOEATLAS_CLANG_TIDY22_EXE OR NOT MOEATLAS_CLANG_TIDY14_EXE)
  message(FATAL_ERROR "MOEATLAS_CLANG_TIDY is ON but clang-tidy-22 or clang-tidy-14 is not installed "
                      "(Debian: apt-get install clang-tidy-22 clang-tidy-14 libc++-14-dev libc++abi-14-dev, "
                      "as packaging/setup.sh test does)")
endif()
set(MOEATLAS_CLANG_TIDY_LIBCXX_TARGETS moeatlas_engine moeatlas_train)

# Sets CXX_CLANG_TIDY on every library and executable defined under the given source directories.
function(moeatlas_enable_clang_tidy)
  set(dirs ${ARGN})
  set(targets)
  while(dirs)
    list(POP_FRONT dirs dir)
    get_property(sub DIRECTORY ${dir} PROPERTY SUBDIRECTORIES)
    get_property(own DIRECTORY ${dir} PROPERTY BUILDSYSTEM_TARGETS)
    list(APPEND dirs ${sub})
    list(APPEND targets ${own})
  endwhile()
  foreach(target IN LISTS targets)
    get_target_property(type ${target} TYPE)
    if(NOT type MATCHES "^(STATIC_LIBRARY|SHARED_LIBRARY|OBJECT_LIBRARY|EXECUTABLE)$")
      continue()
    endif()
    # Compiler warnings are GCC's to judge (MOEATLAS_WARNINGS_AS_ERRORS); clang's own, which clang-tidy
    # would turn into errors under -Werror, are not what this check is for.
    if(target IN_LIST MOEATLAS_CLANG_TIDY_LIBCXX_TARGETS)
      set(tidy ${MOEATLAS_CLANG_TIDY14_EXE} --quiet --extra-arg=-Wno-error --extra-arg=-stdlib=libc++)
    else()
      set(tidy ${MOEATLAS_CLANG_TIDY22_EXE} --quiet --extra-arg=-Wno-error)
    endif()
    set_target_properties(${target} PROPERTIES CXX_CLANG_TIDY "${tidy}")
  endforeach()
endfunction()
