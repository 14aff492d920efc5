# Writes the layer and kernel tables from the files that exist (run at build time by src/CMakeLists.txt):
#   layer_list.inc     one #include per layer header, and ESPRESSO_LAYER(Type) per layer class: every
#                      `class <Type>Layer final` in src/layers/*.h is a layer type
#   <backend>_kernels.inc  ESPRESSO_KERNEL(Type, stem) per kernel factory `make_<stem>(` defined at
#                      the start of a line in src/backends/<backend>/*.{cpp,cu}, where <stem>.h is a layer
#                      (make_lowp_<stem> and make_nhwc_<stem> go to <backend>_lowp_kernels.inc and
#                      <backend>_nhwc_kernels.inc)
# Inputs: SOURCE_DIR (src/), OUTPUT_DIR, BACKENDS (comma-separated).
cmake_minimum_required(VERSION 3.25)
string(REPLACE "," ";" BACKENDS "${BACKENDS}")

function(write_if_changed path content)
  if(EXISTS "${path}")
    file(READ "${path}" old)
    if(old STREQUAL content)
      return()
    endif()
  endif()
  file(WRITE "${path}" "${content}")
endfunction()

file(GLOB headers "${SOURCE_DIR}/layers/*.h")
list(SORT headers)
set(includes "")
set(entries "")
foreach(header IN LISTS headers)
  file(STRINGS "${header}" classes REGEX "^class [A-Za-z0-9]+Layer final")
  foreach(line IN LISTS classes)
    string(REGEX REPLACE "^class ([A-Za-z0-9]+)Layer final.*" "\\1" type "${line}")
    get_filename_component(stem "${header}" NAME_WE)
    string(APPEND includes "#include \"layers/${stem}.h\"\n")
    string(APPEND entries "ESPRESSO_LAYER(${type})\n")
    set("type_of_${stem}" "${type}")
  endforeach()
endforeach()
write_if_changed("${OUTPUT_DIR}/layer_list.inc"
  "// Generated from src/layers/*.h by cmake/generate_tables.cmake; do not edit.\n${includes}#ifdef ESPRESSO_LAYER\n${entries}#endif\n")

foreach(backend IN LISTS BACKENDS)
  file(GLOB sources "${SOURCE_DIR}/backends/${backend}/*.cpp" "${SOURCE_DIR}/backends/${backend}/*.cu")
  list(SORT sources)
  set(kernels "")
  set(lowp_kernels "")
  set(nhwc_kernels "")
  foreach(source IN LISTS sources)
    file(STRINGS "${source}" factories REGEX "^std::unique_ptr<Kernel> make_[a-z0-9_]+\\(")
    foreach(line IN LISTS factories)
      string(REGEX REPLACE "^std::unique_ptr<Kernel> make_([a-z0-9_]+)\\(.*" "\\1" stem "${line}")
      # make_lowp_<stem>: the layer's kernel in fp16/bf16 (docs/precision.md), in its own table.
      set(table kernels)
      # make_nhwc_<stem>: the same reading and writing 4-D tensors channels-last.
      if(stem MATCHES "^lowp_(.+)$")
        set(stem "${CMAKE_MATCH_1}")
        set(table lowp_kernels)
      elseif(stem MATCHES "^nhwc_(.+)$")
        set(stem "${CMAKE_MATCH_1}")
        set(table nhwc_kernels)
      endif()
      if(NOT DEFINED "type_of_${stem}")
        get_filename_component(file "${source}" NAME)
        message(FATAL_ERROR "${file} defines a factory for ${stem} but src/layers/${stem}.h declares no layer")
      endif()
      string(APPEND ${table} "ESPRESSO_KERNEL(${type_of_${stem}}, ${stem})\n")
    endforeach()
  endforeach()
  write_if_changed("${OUTPUT_DIR}/${backend}_kernels.inc"
    "// Generated from src/backends/${backend}/ by cmake/generate_tables.cmake; do not edit.\n${kernels}")
  write_if_changed("${OUTPUT_DIR}/${backend}_lowp_kernels.inc"
    "// Generated from src/backends/${backend}/ by cmake/generate_tables.cmake; do not edit.\n${lowp_kernels}")
  write_if_changed("${OUTPUT_DIR}/${backend}_nhwc_kernels.inc"
    "// Generated from src/backends/${backend}/ by cmake/generate_tables.cmake; do not edit.\n${nhwc_kernels}")
endforeach()
